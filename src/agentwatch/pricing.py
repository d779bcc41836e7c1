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

    def cost_nanousd(self, usage: Usage) -> int:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = (
            self.input_per_mtok
            if self.cached_input_per_mtok is None
            else self.cached_input_per_mtok
        )
        dollars_x_mtok = (
            (usage.prompt_tokens - cached) * self.input_per_mtok
            + cached * cached_rate
            + usage.completion_tokens * self.output_per_mtok
        )
        return round(dollars_x_mtok * NANOS_PER_USD_PER_MTOK)


def shipped_prices() -> dict[str, Price]:
    """The price list bundled in the package (no network)."""
    raw = json.loads(resources.files("agentwatch").joinpath("prices.json").read_text())
    return {
        name: Price(input_per_mtok=row[0], cached_input_per_mtok=row[1], output_per_mtok=row[2])
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
