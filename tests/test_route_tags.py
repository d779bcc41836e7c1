"""`x-agentwatch-tags` keeps a call on the routes that carry every tag it names."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fake_openai import FakeOpenAI
from tests.support import new_key, running_gateway


def test_tags_select_routes(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    key = new_key()
    config = f"""
providers:
  - {{name: local, type: openai_compatible, base_url: "{fake_openai.base_url}"}}
models:
  - name: tagged
    routes:
      - {{provider: local, model: model-eu, tags: [eu, gdpr]}}
      - {{provider: local, model: model-us, tags: [us]}}
tenants:
  - {{name: t, api_keys: ["{key}"]}}
"""
    with running_gateway(tmp_path, config, key) as gateway:

        def call(tags: str) -> httpx.Response:
            return httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "tagged", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {key}", "x-agentwatch-tags": tags},
            )

        before = len(fake_openai.requests)
        assert all(call("eu, gdpr").status_code == 200 for _ in range(10))
        assert {r["model"] for r in fake_openai.requests[before:]} == {"model-eu"}
        refused = call("eu,us")
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "x-agentwatch-tags"
