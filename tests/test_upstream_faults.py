"""Upstreams that misbehave at the HTTP level: the gateway answers correctly or fails cleanly."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import Gateway, new_key

MESSAGES = [{"role": "user", "content": "hi"}]
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "old server"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


class Http10Handler(BaseHTTPRequestHandler):
    """Python's stock server: HTTP/1.0, no Content-Length, the body ends when the socket closes."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        if body.get("stream"):
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            for word in ["old", " server"]:
                chunk = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            usage = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [],
                "usage": COMPLETION["usage"],
            }
            self.wfile.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        else:
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(COMPLETION).encode())

    def log_message(self, *args: object) -> None:
        pass


def raw_server(reply: Callable[[socket.socket, int], None]) -> tuple[int, Callable[[], None]]:
    """A socket server that hands each accepted connection and its index to `reply`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        index = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=reply, args=(conn, index), daemon=True).start()
            index += 1

    threading.Thread(target=serve, daemon=True).start()

    def close() -> None:
        stop.set()
        listener.close()

    return listener.getsockname()[1], close


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head


@pytest.fixture
def gateway_for(tmp_path: Path) -> Iterator[Callable[[int], Gateway]]:
    started: list[Gateway] = []

    def start(port: int) -> Gateway:
        key = new_key()
        config = f"""
providers:
  - name: odd
    type: openai_compatible
    base_url: http://127.0.0.1:{port}/v1
    timeout: 1
models:
  - name: m
    routes: [{{provider: odd, model: m}}]
tenants:
  - name: t
    api_keys: ["{key}"]
"""
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gateway = Gateway(
            workdir=workdir,
            database_url=f"sqlite:///{workdir / 'gw.db'}",
            config=config,
            tenant_key=key,
        )
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)


def test_http10_upstream_without_content_length(gateway_for: Callable[[int], Gateway]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Http10Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gateway = gateway_for(server.server_address[1])
        client = sdk(gateway)
        for _ in range(3):  # no connection is reused after a close-delimited body
            reply = client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
            assert reply.choices[0].message.content == "old server"
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "old server"
        )
        rows = gateway.wait_for_usage(4)
        assert all(r["status"] == 200 and r["prompt_tokens"] == 5 for r in rows)
    finally:
        server.shutdown()
        server.server_close()


def test_upstream_that_drops_idle_connections_silently(
    gateway_for: Callable[[int], Gateway],
) -> None:
    body = json.dumps(COMPLETION).encode()
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )

    def reply(conn: socket.socket, _index: int) -> None:
        with conn:
            read_request(conn)
            conn.sendall(answer)  # promises keep-alive, then hangs up anyway

    port, close = raw_server(reply)
    try:
        gateway = gateway_for(port)
        client = sdk(gateway)
        for _ in range(5):
            assert client.chat.completions.create(model="m", messages=MESSAGES).choices  # type: ignore[arg-type]
    finally:
        close()


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [("garbage", 502), ("silence", 504), ("reset", 502), ("truncated", 502)],
)
def test_broken_upstreams_fail_cleanly(
    gateway_for: Callable[[int], Gateway], behaviour: str, status: int
) -> None:
    def reply(conn: socket.socket, _index: int) -> None:
        with conn:
            read_request(conn)
            if behaviour == "garbage":
                conn.sendall(b"this is not HTTP at all\r\n\r\n")
            elif behaviour == "silence":
                threading.Event().wait(3)
            elif behaviour == "reset":
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            elif behaviour == "truncated":
                conn.sendall(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"id": ')

    port, close = raw_server(reply)
    try:
        gateway = gateway_for(port)
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"authorization": f"Bearer {gateway.tenant_key}"},
            timeout=30,
        )
        assert response.status_code == status, response.text
        assert response.json()["error"]["message"]
        (row,) = gateway.wait_for_usage(1)
        assert row["status"] == status
    finally:
        close()
