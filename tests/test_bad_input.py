"""Bad input always gets a clear 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.support import Gateway

CHAT = "/v1/chat/completions"


def post(gateway: Gateway, path: str, content: bytes, key: str | None = None) -> httpx.Response:
    return httpx.post(
        gateway.url + path,
        content=content,
        headers={
            "authorization": f"Bearer {key or gateway.tenant_key}",
            "content-type": "application/json",
        },
        timeout=30,
    )


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert "code" in error
    assert response.headers["x-request-id"]
    return dict(error)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"   ", None),
        (b"[1, 2]", None),
        (b'"a string"', None),
        (b"null", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "", "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": []}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": "hello"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": ["hello"]}', "messages[0]"),
        (b'{"model": "gpt-4o-mini", "messages": [{"content": "x"}]}', "messages[0]"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "temperature": "hot"}',
            "temperature",
        ),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "max_tokens": 1.5}',
            "max_tokens",
        ),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "stream_options": 1}',
            "stream_options",
        ),
        (b"\xff\xfe\x00garbage", None),
    ],
)
def test_malformed_chat_bodies_are_400(gateway: Gateway, body: bytes, param: str | None) -> None:
    error = assert_openai_error(post(gateway, CHAT, body), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "embedder"}',
        b'{"model": "embedder", "input": []}',
        b'{"model": "embedder", "input": 5}',
        b'{"model": "embedder", "input": [{"text": "x"}]}',
    ],
)
def test_malformed_embedding_bodies_are_400(gateway: Gateway, body: bytes) -> None:
    error = assert_openai_error(post(gateway, "/v1/embeddings", body), 400)
    assert error["param"] == "input"


def test_unknown_model_is_400(gateway: Gateway) -> None:
    body = b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}'
    error = assert_openai_error(post(gateway, CHAT, body), 400)
    assert error["code"] == "model_not_found"


def test_unknown_key_is_401_before_the_body_is_read(gateway: Gateway) -> None:
    error = assert_openai_error(
        post(gateway, CHAT, b"{broken", key="sk-unknown-0000000000000000"), 401
    )
    assert error["code"] == "invalid_api_key"


def test_declared_huge_body_is_413_without_reading_it(gateway: Gateway) -> None:
    key = gateway.tenant_key
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head.encode())
        reply = b""
        while b'"request_too_large"' not in reply and (chunk := sock.recv(65536)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"request_too_large"' in reply


def test_streamed_huge_body_is_413(gateway: Gateway) -> None:
    chunks = (b"x" * (1024 * 1024) for _ in range(40))
    streamed = httpx.post(
        gateway.url + CHAT,
        content=chunks,
        headers={"authorization": f"Bearer {gateway.tenant_key}"},
        timeout=60,
    )
    assert_openai_error(streamed, 413)


def test_unknown_endpoint_is_404_json(gateway: Gateway) -> None:
    assert_openai_error(post(gateway, "/v1/nothing-here", b"{}"), 404)


def test_wrong_method_is_405_json(gateway: Gateway) -> None:
    response = httpx.get(
        gateway.url + CHAT,
        headers={"authorization": f"Bearer {gateway.tenant_key}"},
    )
    assert_openai_error(response, 405)


def test_admin_api_rejects_bad_bodies_with_4xx(gateway: Gateway) -> None:
    for content in (b"", b"{", b"[]", b'{"email": 1, "password": []}', b'{"email": "a@b.c"}'):
        response = httpx.post(
            gateway.url + "/api/auth/login",
            content=content,
            headers={"content-type": "application/json"},
        )
        assert 400 <= response.status_code < 500, (content, response.status_code)
        assert response.json()["detail"]
