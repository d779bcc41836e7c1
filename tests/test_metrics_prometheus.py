"""A real Prometheus (the Debian package, installed by scripts/ensure-services.sh) scrapes a
gateway on 127.0.0.1; its HTTP API then answers for the request counter and a latency quantile."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, free_port
from tests.test_metrics import METRICS_TOKEN, start_gateway

CALLS = 12


@pytest.fixture
def gateway(fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[Gateway]:
    workdir = tmp_path / "gw"
    workdir.mkdir()
    gateway = start_gateway(workdir, fake_openai, AGENTWATCH_METRICS_TOKEN=METRICS_TOKEN)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def prometheus(gateway: Gateway, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing: run `make services` (as root)"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: agentwatch
    authorization:
      credentials: {METRICS_TOKEN}
    static_configs:
      - targets: ["127.0.0.1:{gateway.port}"]
"""
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), what="prometheus ready")
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def query(prometheus: str, promql: str) -> float | None:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    if not result:
        return None
    return float(result[0]["value"][1])


def test_prometheus_scrapes_requests_and_latency(gateway: Gateway, prometheus: str) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)

    def call() -> None:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
        )

    requests = 'sum(agentwatch_requests_total{status="200",model="gpt-4o-mini"})'
    # One call first, so the series exist in a scrape before the rest: rate() needs an increase.
    call()
    wait_for(lambda: query(prometheus, requests) == 1, what="the first call in Prometheus")
    for _ in range(CALLS - 1):
        call()
    wait_for(lambda: query(prometheus, requests) == CALLS, what=f"{CALLS} requests in Prometheus")
    p95 = (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(agentwatch_request_duration_seconds_bucket[1m])))"
    )
    wait_for(lambda: _finite(query(prometheus, p95)), what="a latency quantile")
    latency = query(prometheus, p95)
    assert latency is not None and 0 < latency < 120


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)
