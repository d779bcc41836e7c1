"""A request too long for a route fails over to a route with a larger context window."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.fake_openai import FakeOpenAI
from tests.support import new_key, running_gateway


def test_context_length_errors_move_to_a_larger_window(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    key = new_key()
    # `fail-400` answers OpenAI's context_length_exceeded error.
    config = f"""
providers:
  - {{name: local, type: openai_compatible, base_url: "{fake_openai.base_url}"}}
models:
  - name: windowed
    strategy: fallback
    routes:
      - {{provider: local, model: fail-400, order: 1, context_window: 8000}}
      - {{provider: local, model: fail-500, order: 2, context_window: 4000}}
      - {{provider: local, model: gpt-4o-mini, order: 3, context_window: 128000}}
  - name: unwindowed
    strategy: fallback
    routes:
      - {{provider: local, model: fail-400, order: 1}}
      - {{provider: local, model: gpt-4o-mini, order: 2}}
tenants:
  - {{name: t, api_keys: ["{key}"]}}
"""
    with running_gateway(tmp_path, config, key) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        before = len(fake_openai.requests)
        reply = client.chat.completions.create(
            model="windowed", messages=[{"role": "user", "content": "a very long prompt"}]
        )
        assert reply.choices[0].message.content
        tried = [r["model"] for r in fake_openai.requests[before:]]
        assert tried == ["fail-400", "gpt-4o-mini"], "straight to the larger window"
        (row,) = gateway.wait_for_usage(1, model="windowed")
        assert row["upstream_model"] == "gpt-4o-mini" and row["attempts"] == 2
        # Without windows configured, a rejected request is the client's answer.
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="unwindowed", messages=[{"role": "user", "content": "a very long prompt"}]
            )
