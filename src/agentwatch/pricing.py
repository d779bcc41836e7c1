"""Token prices and cost: the catalogue shipped with the package, and exact nano-dollar costs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

from agentwatch.providers.base import Usage

NANOS_PER_USD_PER_MTOK = 1000  # $1 per million tokens is 1,000 nano-dollars per token
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    reasoning_per_mtok: float | None = None

    def cost_nanousd(self, usage: Usage) -> int:
        """Cache reads at the cached rate, cache writes at the write rate (each defaulting to
        the input rate), the rest of the prompt at the input rate; reasoning tokens, which are
        part of the completion, at the reasoning rate (default: the output rate), the rest of
        the completion at the output rate. Nothing is counted twice."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        reasoning = min(usage.reasoning_tokens or 0, usage.completion_tokens)
        dollars_x_mtok = (
            (usage.prompt_tokens - cached - written) * self.input_per_mtok
            + cached * _or(self.cached_input_per_mtok, self.input_per_mtok)
            + written * _or(self.cache_write_per_mtok, self.input_per_mtok)
            + (usage.completion_tokens - reasoning) * self.output_per_mtok
            + reasoning * _or(self.reasoning_per_mtok, self.output_per_mtok)
        )
        return round(dollars_x_mtok * NANOS_PER_USD_PER_MTOK)


def with_markup(cost_nanousd: int, markup_pct: float | None) -> int:
    """An organisation's markup (+10: 10 % on top) or discount (-5), on the final cost; a
    discount of 100 % or more makes it free, never negative."""
    if not markup_pct:
        return cost_nanousd
    return max(0, round(cost_nanousd * (100 + markup_pct) / 100))


def _or(rate: float | None, fallback: float) -> float:
    return fallback if rate is None else rate


def shipped_prices() -> dict[str, Price]:
    """The price list bundled in the package (no network): [input, cached input, output] and,
    where the vendor charges for prompt-cache writes, the write rate fourth."""
    raw = json.loads(resources.files("agentwatch").joinpath("prices.json").read_text())
    return {
        name: Price(
            input_per_mtok=row[0],
            cached_input_per_mtok=row[1],
            output_per_mtok=row[2],
            cache_write_per_mtok=row[3] if len(row) > 3 else None,
        )
        for name, row in raw.items()
        if not name.startswith("_")
    }


def price_lookup_names(model: str) -> list[str]:
    """Names to try for a model id: as given, without a vendor prefix, without a date suffix."""
    names = [model]
    bare = model.rsplit("/", 1)[-1]
    if bare != model:
        names.append(bare)
    undated = _DATE_SUFFIX.sub("", bare)
    if undated != bare:
        names.append(undated)
    return names


def nanos_to_usd(nanos: int) -> float:
    return nanos / 1_000_000_000
