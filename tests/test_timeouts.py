"""Per-route timeouts: until the response starts, and between its bytes."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fake_openai import FakeOpenAI
from tests.support import new_key, running_gateway

MESSAGES = [{"role": "user", "content": "hi"}]


def test_first_byte_and_idle_timeouts_are_separate(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    key = new_key()
    config = f"""
providers:
  - {{name: local, type: openai_compatible, base_url: "{fake_openai.base_url}"}}
models:
  - name: late-start
    retries: 0
    routes: [{{provider: local, model: slow-5, first_byte_timeout_s: 1, timeout_s: 30}}]
  - name: slow-drip
    retries: 0
    routes: [{{provider: local, model: stream-forever, first_byte_timeout_s: 1, timeout_s: 0.5}}]
tenants:
  - {{name: t, api_keys: ["{key}"]}}
"""
    with running_gateway(tmp_path, config, key) as gateway:
        headers = {"authorization": f"Bearer {key}"}
        late = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "late-start", "messages": MESSAGES},
            headers=headers,
            timeout=30,
        )
        assert late.status_code == 504, "the response did not start within first_byte_timeout_s"
        # A stream whose events come every 20 ms is never idle for 0.5 s: read 40 events.
        with httpx.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json={"model": "slow-drip", "messages": MESSAGES, "stream": True},
            headers=headers,
            timeout=30,
        ) as stream:
            assert stream.status_code == 200
            events = 0
            for line in stream.iter_lines():
                events += line.startswith("data: {")
                if events == 40:
                    break
        assert events == 40
