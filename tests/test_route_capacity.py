"""Routes with rpm/tpm capacity take no more than that per minute; the rest fail over."""

from __future__ import annotations

import time
from pathlib import Path

import openai

from tests.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS, FakeOpenAI
from tests.support import new_key, running_gateway


def test_rpm_and_tpm_caps_send_the_overflow_elsewhere(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    key = new_key()
    tokens_per_call = PROMPT_TOKENS + COMPLETION_TOKENS
    config = f"""
providers:
  - {{name: local, type: openai_compatible, base_url: "{fake_openai.base_url}"}}
models:
  - name: by-requests
    strategy: fallback
    routes:
      - {{provider: local, model: capped-rpm, order: 1, rpm: 3}}
      - {{provider: local, model: overflow-rpm, order: 2}}
  - name: by-tokens
    strategy: fallback
    routes:
      - {{provider: local, model: capped-tpm, order: 1, tpm: {tokens_per_call + 1}}}
      - {{provider: local, model: overflow-tpm, order: 2}}
tenants:
  - {{name: t, api_keys: ["{key}"]}}
"""
    with running_gateway(tmp_path, config, key) as gateway:
        if time.time() % 60 > 45:  # capacity is per clock minute: start well inside one
            time.sleep(61 - time.time() % 60)
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        before = len(fake_openai.requests)
        for alias in ["by-requests"] * 5 + ["by-tokens"] * 5:
            reply = client.chat.completions.create(
                model=alias, messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content
        seen = [r["model"] for r in fake_openai.requests[before:]]
        assert seen.count("capped-rpm") == 3 and seen.count("overflow-rpm") == 2
        # The first call uses the whole budget but one token, the second exceeds it.
        assert seen.count("capped-tpm") == 2 and seen.count("overflow-tpm") == 3
