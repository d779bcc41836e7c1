"""The cost engine: every token kind at its rate, reasoning inside the completion (never
counted twice), route prices over catalogue prices, the organisation's markup last; and the
usage each provider reports, reasoning tokens included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentwatch.catalog import Catalog, load_catalog
from agentwatch.db.models import Model, Provider
from agentwatch.pricing import Price, with_markup
from agentwatch.providers.anthropic_wire import usage_from_anthropic
from agentwatch.providers.base import Usage
from agentwatch.providers.gemini_response import usage_from_metadata
from agentwatch.providers.openai import responses_usage
from agentwatch.upstream import ProxySettings, UpstreamClient
from tests.conftest import BACKENDS
from tests.ledger_support import Sessions, database_url, migrated, new_org

KEY = bytes(range(32))
PRICE = Price(
    input_per_mtok=2.0,
    output_per_mtok=8.0,
    cached_input_per_mtok=0.5,
    cache_write_per_mtok=2.5,
    reasoning_per_mtok=12.0,
)


def test_each_token_kind_at_its_rate() -> None:
    usage = Usage(
        prompt_tokens=1000,
        completion_tokens=500,
        cached_tokens=300,
        cache_write_tokens=100,
        reasoning_tokens=200,
    )
    # $ per million tokens x tokens = nano-dollars / 1000
    expected = (600 * 2.0 + 300 * 0.5 + 100 * 2.5 + 300 * 8.0 + 200 * 12.0) * 1000
    assert PRICE.cost_nanousd(usage) == expected


def test_reasoning_defaults_to_the_output_rate_and_is_not_counted_twice() -> None:
    plain = Price(input_per_mtok=2.0, output_per_mtok=8.0)
    with_reasoning = Usage(prompt_tokens=100, completion_tokens=50, reasoning_tokens=40)
    without = Usage(prompt_tokens=100, completion_tokens=50)
    unknown = Usage(prompt_tokens=100, completion_tokens=50, reasoning_tokens=None)
    assert plain.cost_nanousd(with_reasoning) == plain.cost_nanousd(without) == 600_000
    assert plain.cost_nanousd(unknown) == 600_000
    # A reported count above the completion is held to it.
    odd = Usage(prompt_tokens=0, completion_tokens=10, reasoning_tokens=99)
    assert PRICE.cost_nanousd(odd) == 10 * 12.0 * 1000


@pytest.mark.parametrize(
    ("markup", "expected"),
    [(None, 1000), (0.0, 1000), (10.0, 1100), (-5.0, 950), (-100.0, 0), (-150.0, 0), (0.05, 1000)],
)
def test_markup_and_discount(markup: float | None, expected: int) -> None:
    assert with_markup(1000, markup) == expected


def test_usage_parsing_of_every_provider() -> None:
    chat = Usage.from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 60,
            "prompt_tokens_details": {"cached_tokens": 20},
            "completion_tokens_details": {"reasoning_tokens": 40},
        }
    )
    assert chat == Usage(100, 60, cached_tokens=20, reasoning_tokens=40)
    zero = Usage.from_openai({"completion_tokens_details": {"reasoning_tokens": 0}})
    assert zero is not None and zero.reasoning_tokens == 0
    absent = Usage.from_openai({"prompt_tokens": 1, "completion_tokens": 1})
    assert absent is not None and absent.reasoning_tokens is None
    responses = responses_usage(
        {
            "input_tokens": 100,
            "output_tokens": 60,
            "input_tokens_details": {"cached_tokens": 20},
            "output_tokens_details": {"reasoning_tokens": 40},
        }
    )
    assert responses == Usage(100, 60, cached_tokens=20, reasoning_tokens=40)
    gemini = usage_from_metadata(
        {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 40}
    )
    assert gemini == Usage(100, 60, reasoning_tokens=40)  # thoughts are output in OpenAI's sense
    no_thoughts = usage_from_metadata({"promptTokenCount": 1, "candidatesTokenCount": 1})
    assert no_thoughts is not None and no_thoughts.reasoning_tokens is None
    claude = usage_from_anthropic({"input_tokens": 10, "output_tokens": 60})
    assert claude is not None and claude.reasoning_tokens is None  # thinking is not apart


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(str(request.param), tmp_path) as url:
        yield url


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with migrated(db_url) as made:
        yield made


async def load(sessions: Sessions) -> Catalog:
    client = UpstreamClient(ProxySettings())
    try:
        async with sessions() as session:
            return await load_catalog(session, KEY, client)
    finally:
        await client.close()


async def test_the_catalog_prices_with_the_orgs_markup(sessions: Sessions) -> None:
    """Route price (the per-provider override) over the upstream model's catalogue price over
    the alias's; the organisation's markup on the result; each org its own."""
    marked = await new_org(sessions, "marked", markup_pct=25.0)
    plain = await new_org(sessions, "plain")
    cheap = {"input_cost_per_mtok": 1.0, "output_cost_per_mtok": 1.0}
    async with sessions.begin() as session:
        for org in (marked, plain):
            session.add(Provider(org_id=org, name="p", type="openai", base_url="http://x/v1"))
            session.add(
                Model(
                    org_id=org,
                    name="thinker",
                    input_cost_per_mtok=3.0,
                    output_cost_per_mtok=6.0,
                    reasoning_cost_per_mtok=9.0,
                )
            )
            session.add(
                Model(
                    org_id=org,
                    name="alias",
                    input_cost_per_mtok=100.0,
                    output_cost_per_mtok=100.0,
                    routes=[
                        {"provider": "p", "model": "thinker-2025-01-01"},
                        {"provider": "p", "model": "unpriced-model"},
                        {"provider": "p", "model": "thinker", "price": cheap},
                    ],
                )
            )
            session.add(Model(org_id=org, name="free-alias", routes=[{"provider": "p"}]))
    catalog = await load(sessions)
    usage = Usage(prompt_tokens=1000, completion_tokens=100, reasoning_tokens=60)
    by_catalogue, by_alias, by_route = catalog.aliases[(plain, "alias")].routes
    # The dated upstream id finds the catalogue price of "thinker", reasoning at its own rate.
    thinker = (1000 * 3.0 + 40 * 6.0 + 60 * 9.0) * 1000
    assert catalog.cost_nanousd(plain, by_catalogue, "alias", usage) == thinker
    assert catalog.cost_nanousd(marked, by_catalogue, "alias", usage) == thinker * 1.25
    assert catalog.cost_nanousd(plain, by_alias, "alias", usage) == 1100 * 100.0 * 1000
    assert catalog.cost_nanousd(plain, by_route, "alias", usage) == 1100 * 1.0 * 1000
    # Before routing, a reservation takes the dearest route, markup included.
    assert catalog.estimate_cost_nanousd(marked, "alias", usage) == 1100 * 100 * 1000 * 1.25
    # Unknown price: unknown cost, not zero.
    assert catalog.cost_nanousd(plain, None, "no-such-model", usage) is None
    assert catalog.estimate_cost_nanousd(plain, "free-alias", usage) is None
    assert catalog.markups == {marked: 25.0}
