from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, database, new_key

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


def standard_config(upstream_url: str, tenant_key: str, other_key: str) -> str:
    return f"""
providers:
  - name: local
    type: openai_compatible
    base_url: {upstream_url}
    api_key: ${{UPSTREAM_KEY}}
    timeout: 3
models:
  - name: gpt-4o-mini
    routes:
      - provider: local
        model: gpt-4o-mini
  - name: embedder
    routes:
      - provider: local
        model: text-embedding-3-small
  - name: custom-priced
    input_cost_per_mtok: 1000
    output_cost_per_mtok: 2000
    routes:
      - provider: local
        model: my-own-model
  - name: broken
    retries: 0
    circuit: {{failure_threshold: 1000}}
    routes:
      - provider: local
        model: fail-500
  - name: limited
    retries: 0
    circuit: {{failure_threshold: 1000}}
    routes:
      - provider: local
        model: fail-429
  - name: too-long
    retries: 0
    circuit: {{failure_threshold: 1000}}
    routes:
      - provider: local
        model: fail-400
  - name: bad-upstream-key
    retries: 0
    circuit: {{failure_threshold: 1000}}
    routes:
      - provider: local
        model: fail-401
  - name: slow
    retries: 0
    circuit: {{failure_threshold: 1000}}
    routes:
      - provider: local
        model: slow-10
  - name: endless
    retries: 0
    circuit: {{failure_threshold: 1000}}
    routes:
      - provider: local
        model: stream-forever
  - name: spaced
    routes:
      - provider: local
        model: spaced-crlf
  - name: breaking
    retries: 0
    circuit: {{failure_threshold: 1000}}
    routes:
      - provider: local
        model: stream-break
tenants:
  - name: ci
    api_keys: [${{CI_TENANT_KEY}}]
  - name: restricted
    api_keys: ["{other_key}"]
    models: [gpt-4o-mini]
"""


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    workdir: Path = tmp_path_factory.mktemp(f"gw-{request.param}")
    tenant_key, other_key = new_key(), new_key()
    with database(request.param, workdir) as url:
        gw = Gateway(
            workdir=workdir,
            database_url=url,
            config=standard_config(fake_openai.base_url, tenant_key, other_key),
            env={"UPSTREAM_KEY": "upstream-secret", "CI_TENANT_KEY": tenant_key},
            tenant_key=tenant_key,
            restricted_key=other_key,
        )
        gw.start()
        try:
            yield gw
        finally:
            gw.stop()
