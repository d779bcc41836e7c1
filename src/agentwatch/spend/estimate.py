"""How many completion tokens a call may write before it runs: the `max_tokens` it asks for
(or a default). With its prompt counted locally (agentwatch.tokens) and the dearest route's
price (Catalog.estimate_cost_nanousd), that is what the limit stage reserves."""

from __future__ import annotations

from typing import Any

# Completion tokens assumed for a call that sets no `max_tokens`: about what a long chat
# answer takes. A call that writes more than its estimate can overshoot a budget by the
# difference; setting `max_tokens` makes the reservation exact.
DEFAULT_COMPLETION_TOKENS = 4096

# The request field that caps the answer, per endpoint (first found wins).
_MAX_FIELDS: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("max_completion_tokens", "max_tokens"),
    "/v1/completions": ("max_tokens",),
    "/v1/messages": ("max_tokens",),
    "/v1/responses": ("max_output_tokens",),
}
_NO_COMPLETION = frozenset({"/v1/embeddings", "/v1/messages/count_tokens"})


def completion_tokens(endpoint: str, payload: dict[str, Any]) -> int:
    if endpoint in _NO_COMPLETION:
        return 0
    for name in _MAX_FIELDS.get(endpoint, ("max_tokens",)):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            n: int = payload.get("n", 1) if isinstance(payload.get("n"), int) else 1
            return value * max(1, n)
    return DEFAULT_COMPLETION_TOKENS
