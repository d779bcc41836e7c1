"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY steer the gateway's upstream traffic."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import standard_config
from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, database, new_key

MESSAGES = [{"role": "user", "content": "hi"}]


class RecordingProxy:
    """Accepts proxy requests on 127.0.0.1, notes each request line, and answers 502."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                    data += chunk
                self.lines.append(data.split(b"\r\n", 1)[0].decode())
                conn.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    yield server
    server.close()


def start_gateway(tmp_path: Path, config: str, env: dict[str, str]) -> Gateway:
    gateway = Gateway(
        workdir=tmp_path, database_url=f"sqlite:///{tmp_path / 'gw.db'}", config=config, env=env
    )
    gateway.start()
    return gateway


def chat(gateway: Gateway, key: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": model, "messages": MESSAGES},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_https_upstream_goes_through_https_proxy(tmp_path: Path, proxy: RecordingProxy) -> None:
    key = new_key()
    config = f"""
providers:
  - name: vendor
    type: openai
    base_url: https://api.vendor.invalid/v1
    api_key: sk-vendor
models:
  - name: remote
    retries: 0
    routes: [{{provider: vendor, model: gpt-4o}}]
tenants:
  - name: t
    api_keys: ["{key}"]
"""
    gateway = start_gateway(tmp_path, config, {"HTTPS_PROXY": proxy.url})
    try:
        response = chat(gateway, key, "remote")
    finally:
        gateway.stop()
    assert response.status_code == 502
    assert proxy.lines == ["CONNECT api.vendor.invalid:443 HTTP/1.1"]


def test_no_proxy_bypasses_the_proxy(
    tmp_path: Path, proxy: RecordingProxy, fake_openai: FakeOpenAI
) -> None:
    key = new_key()
    config = standard_config(fake_openai.base_url, key, new_key())
    env = {
        "HTTP_PROXY": proxy.url,
        "NO_PROXY": "localhost,127.0.0.1",
        "UPSTREAM_KEY": "k",
        "CI_TENANT_KEY": key,
    }
    gateway = start_gateway(tmp_path, config, env)
    try:
        response = chat(gateway, key)
    finally:
        gateway.stop()
    assert response.status_code == 200
    assert proxy.lines == []


def test_http_upstream_goes_through_http_proxy(
    tmp_path: Path, proxy: RecordingProxy, fake_openai: FakeOpenAI
) -> None:
    key = new_key()
    config = standard_config(fake_openai.base_url, key, new_key())
    env = {"HTTP_PROXY": proxy.url, "UPSTREAM_KEY": "k", "CI_TENANT_KEY": key}
    gateway = start_gateway(tmp_path, config, env)
    try:
        response = chat(gateway, key)
    finally:
        gateway.stop()
    assert response.status_code == 502
    # The proxy's 502 is retryable: one attempt and the alias's two default retries.
    assert proxy.lines == [f"POST {fake_openai.base_url}/chat/completions HTTP/1.1"] * 3


def test_database_is_reachable_with_a_proxy_set(tmp_path: Path, proxy: RecordingProxy) -> None:
    """Proxies are for upstream calls only: PostgreSQL and the admin API never use them."""
    key = new_key()
    with database("postgres", tmp_path) as url:
        gateway = Gateway(
            workdir=tmp_path,
            database_url=url,
            config=f'tenants:\n  - name: t\n    api_keys: ["{key}"]\n',
            env={"HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url},
        )
        gateway.start()
        try:
            assert httpx.get(f"{gateway.url}/readyz").json()["database"] == "ok"
        finally:
            gateway.stop()
    assert proxy.lines == []
