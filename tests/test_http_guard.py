"""HTTP hardening: security headers on every response, CORS by allowlist, admin request limits,
and error bodies that echo no input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from agentwatch.api_guard import (
    MAX_JSON_DEPTH,
    install_error_handlers,
    json_body_problem,
    json_structure_problem,
)
from agentwatch.http_guard import CONTENT_SECURITY_POLICY, HttpGuard
from agentwatch.proxy.asgi_io import Receive, Scope, Send
from tests.conftest import standard_config
from tests.fake_openai import FakeOpenAI
from tests.support import ADMIN_EMAIL, Gateway, new_key, running_gateway

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"
CHAT = "/v1/chat/completions"
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
LOGIN = "/api/auth/login"
ALLOWED_ORIGIN = "https://dashboard.example.com"
OTHER_ORIGIN = "https://evil.example.net"
SECRET = "hunter2-must-not-be-echoed"


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_list(name) == [value], (response.url, name)


def access_control(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )


def post_json(gateway: Gateway, path: str, content: bytes) -> httpx.Response:
    return httpx.post(
        gateway.url + path, content=content, headers={"content-type": "application/json"}
    )


# Security headers


def test_security_headers_on_admin_answers_and_errors(gateway: Gateway) -> None:
    for path in ("/healthz", "/readyz", "/api/openapi.json", "/api/nothing-here", "/metrics"):
        response = httpx.get(gateway.url + path)
        assert_security_headers(response)
        assert "strict-transport-security" not in response.headers
    assert_security_headers(post_json(gateway, LOGIN, b'{"email": "x@y.z", "password": "no"}'))


def test_security_headers_on_proxy_answers(gateway: Gateway) -> None:
    auth = {"authorization": f"Bearer {gateway.tenant_key}"}
    answer = httpx.post(gateway.url + CHAT, json=CHAT_BODY, headers=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    assert_security_headers(answer)
    refused = httpx.post(gateway.url + CHAT, json=CHAT_BODY, headers={"x-api-key": "sk-nope"})
    assert refused.status_code == 401
    assert_security_headers(refused)
    body = {**CHAT_BODY, "stream": True}
    with httpx.stream("POST", gateway.url + CHAT, json=body, headers=auth, timeout=30) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert_security_headers(stream)
        assert b"data: [DONE]" in stream.read()
    assert "strict-transport-security" not in answer.headers


def test_hsts_only_when_the_request_came_over_tls(gateway: Gateway) -> None:
    tls = {"x-forwarded-proto": "https"}
    assert httpx.get(gateway.url + "/healthz", headers=tls).headers.get_list(
        "strict-transport-security"
    ) == [HSTS]
    proxied = httpx.get(
        gateway.url + "/v1/models",
        headers={**tls, "authorization": f"Bearer {gateway.tenant_key}"},
    )
    assert proxied.headers["strict-transport-security"] == HSTS
    plain = httpx.get(gateway.url + "/healthz", headers={"x-forwarded-proto": "http"})
    assert "strict-transport-security" not in plain.headers


# CORS


def test_cors_is_closed_by_default(gateway: Gateway) -> None:
    simple = httpx.get(gateway.url + "/healthz", headers={"origin": ALLOWED_ORIGIN})
    assert simple.status_code == 200 and access_control(simple) == {}
    for path in (LOGIN, CHAT):
        refused = preflight(gateway.url + path, ALLOWED_ORIGIN)
        assert refused.status_code == 403 and access_control(refused) == {}
        assert_security_headers(refused)


@pytest.fixture(scope="module")
def cors_gateway(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    key = new_key()
    env = {
        "UPSTREAM_KEY": "upstream-secret",
        "CI_TENANT_KEY": key,
        "AGENTWATCH_CORS_ORIGINS": f"{ALLOWED_ORIGIN}/, http://localhost:5173",
    }
    workdir: Path = tmp_path_factory.mktemp("gw-cors")
    config = standard_config(fake_openai.base_url, key, new_key())
    with running_gateway(workdir, config, key, env=env) as gateway:
        yield gateway


def test_an_allowed_origin_gets_cors_headers(cors_gateway: Gateway) -> None:
    origin = {"origin": ALLOWED_ORIGIN}
    admin = httpx.get(cors_gateway.url + "/healthz", headers=origin)
    auth = {**origin, "authorization": f"Bearer {cors_gateway.tenant_key}"}
    proxied = httpx.post(cors_gateway.url + CHAT, json=CHAT_BODY, headers=auth, timeout=30)
    assert proxied.status_code == 200, proxied.text
    for response in (admin, proxied):
        assert access_control(response) == {
            "access-control-allow-origin": ALLOWED_ORIGIN,
            "access-control-allow-credentials": "true",
        }
        assert response.headers["vary"] == "Origin"
        assert_security_headers(response)
    for path in (LOGIN, CHAT, "/api/usage/records"):
        answer = preflight(cors_gateway.url + path, ALLOWED_ORIGIN)
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert answer.headers["access-control-max-age"] == "600"
        methods = answer.headers["access-control-allow-methods"].split(", ")
        assert set(methods) == {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
        allowed = answer.headers["access-control-allow-headers"].lower().split(", ")
        assert {"authorization", "content-type", "x-agentwatch-org", "x-api-key"} <= set(allowed)
        assert {"x-request-id", "anthropic-version", "anthropic-beta"} <= set(allowed)


def test_another_origin_gets_no_cors_headers(cors_gateway: Gateway) -> None:
    simple = httpx.get(cors_gateway.url + "/healthz", headers={"origin": OTHER_ORIGIN})
    assert simple.status_code == 200 and access_control(simple) == {}
    assert simple.headers["vary"] == "Origin"
    refused = preflight(cors_gateway.url + LOGIN, OTHER_ORIGIN)
    assert refused.status_code == 403 and access_control(refused) == {}
    login = httpx.post(
        cors_gateway.url + LOGIN,
        json={"email": ADMIN_EMAIL, "password": "wrong"},
        headers={"origin": OTHER_ORIGIN},
    )
    assert login.status_code == 401 and access_control(login) == {}


# Request limits on the admin side


def test_a_body_over_one_mib_is_413(gateway: Gateway) -> None:
    big = b'{"email": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    declared = post_json(gateway, LOGIN, big)
    assert declared.status_code == 413
    assert declared.json() == {"detail": "request body is larger than 1 MiB"}
    assert_security_headers(declared)
    chunks = (b"a" * 65536 for _ in range(32))  # no content-length: chunked
    streamed = httpx.post(
        gateway.url + LOGIN, content=chunks, headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json() == {"detail": "request body is larger than 1 MiB"}


def test_the_proxy_keeps_its_own_body_limit(gateway: Gateway) -> None:
    long_prompt = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2**21}]}
    response = httpx.post(
        gateway.url + CHAT,
        json=long_prompt,
        headers={"authorization": f"Bearer {gateway.tenant_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 10_000 + b"]" * 10_000, "deeper than 32 levels"),
        (b"[" * 33 + b"]" * 33, "deeper than 32 levels"),
        (b'{"email": "a\\u0000b@example.com", "password": "x"}', "NUL"),
        (b'{"email": "a@example.com", "password": "x", "k\\u0000": 1}', "NUL"),
        (b'{"email": "\\ud800@example.com", "password": "x"}', "surrogate"),
        (b'{"email": "a@example.com", "password": "\\udc00"}', "surrogate"),
        (b'{"email": "\xff\xfe@example.com", "password": "x"}', "UTF-8"),
        (b'{"email": "a@example.com", "password": "x"', "not valid JSON"),
    ],
)
def test_bad_json_bodies_are_400(gateway: Gateway, body: bytes, reason: str) -> None:
    response = post_json(gateway, LOGIN, body)
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]
    assert_security_headers(response)


def test_a_body_without_content_type_is_checked_as_json(gateway: Gateway) -> None:
    body = b'{"email": "a\\u0000b@example.com", "password": "x"}'
    response = httpx.post(gateway.url + LOGIN, content=body)
    assert response.status_code == 400 and "NUL" in response.json()["detail"]


@pytest.mark.parametrize(
    "target",
    [
        "/api/usage/records?tenant=a%00b",
        "/api/usage/records?tenant=%zz",
        "/api/usage/records?tenant=50%",
        "/api/usage%00/records",
        "/healthz?x=%0",
    ],
)
def test_nul_or_broken_percent_encoding_in_the_url_is_400(gateway: Gateway, target: str) -> None:
    response = httpx.get(gateway.url + target)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]


def test_a_good_login_still_reaches_the_route(gateway: Gateway) -> None:
    token = gateway.admin_token()  # the guard read the body and replayed it
    records = httpx.get(
        gateway.url + "/api/usage/records?limit=1&tenant=ci%20team",
        headers={"authorization": f"Bearer {token}"},
    )
    assert records.status_code == 200, records.text


@pytest.mark.parametrize(
    "body",
    [
        {"email": ADMIN_EMAIL, "password": [SECRET]},
        {"email": 42, "password": {"value": SECRET}},
        [ADMIN_EMAIL, SECRET],
    ],
)
def test_validation_errors_do_not_echo_the_input(gateway: Gateway, body: object) -> None:
    response = httpx.post(gateway.url + LOGIN, json=body)
    assert response.status_code == 422
    assert SECRET not in response.text
    detail = response.json()["detail"]
    assert detail and all(set(error) == {"loc", "msg", "type"} for error in detail)


# In-process: the pure checker, header merging, the 500 handler


def test_depth_is_measured_without_recursion() -> None:
    assert json_structure_problem(nested(MAX_JSON_DEPTH)) is None
    assert json_structure_problem(nested(MAX_JSON_DEPTH + 1)) == "JSON nests deeper than 32 levels"
    assert json_structure_problem(nested(100_000)) == "JSON nests deeper than 32 levels"
    assert json_structure_problem({"a": {"b": [1, 2, {"c": None}]}}) is None
    assert json_structure_problem([[]], max_depth=1) is not None


def nested(depth: int) -> object:
    document: object = []
    for _ in range(depth - 1):
        document = [document]
    return document


def test_nul_is_found_in_keys_and_values_anywhere() -> None:
    assert json_structure_problem({"a": [{"b": ["fine", "x\x00"]}]}) is not None
    assert json_structure_problem({"a": [{"b\x00": 1}]}) is not None
    assert json_structure_problem("\x00") is not None
    assert json_structure_problem({"a": ["\\u0000 spelled out is fine", 0, 1.5, True]}) is None


def test_json_body_problem_maps_parser_errors() -> None:
    assert json_body_problem(b'{"a": [1, "b"]}') is None
    assert "surrogate" in (json_body_problem(b'"\\ud83d"') or "")
    assert "UTF-8" in (json_body_problem(b'"\xed\xa0\x80"') or "")
    assert "deeper" in (json_body_problem(b"[" * 5000 + b"]" * 5000) or "")
    assert "not valid JSON" in (json_body_problem(b"{") or "")


async def own_headers_app(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [
        (b"content-security-policy", b"default-src 'none'"),
        (b"vary", b"Accept-Encoding"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def test_headers_the_app_set_are_not_duplicated() -> None:
    guard = HttpGuard(own_headers_app, ["https://a.example"])
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/", headers={"origin": "https://a.example"})
    assert response.headers.get_list("content-security-policy") == ["default-src 'none'"]
    assert response.headers.get_list("vary") == ["Accept-Encoding, Origin"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["access-control-allow-origin"] == "https://a.example"


async def test_a_wildcard_admits_any_origin_without_credentials() -> None:
    guard = HttpGuard(own_headers_app, ["*"])
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        simple = await client.get("/", headers={"origin": "https://any.example"})
        answer = await client.options(
            "/", headers={"origin": "https://any.example", "access-control-request-method": "PUT"}
        )
    for response in (simple, answer):
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
    assert answer.status_code == 204


async def test_an_unexpected_error_is_a_bare_500() -> None:
    api = FastAPI()
    install_error_handlers(api)

    @api.get("/api/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail from deep inside")

    transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/api/boom", headers={"x-request-id": "trace-500"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error", "request_id": "trace-500"}
    assert "secret detail" not in response.text and "Traceback" not in response.text
