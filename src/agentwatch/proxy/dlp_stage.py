"""The DLP stage of the `/v1` pipeline: scan what a call sends upstream (and, when its policy
says so, what comes back), then block, redact or log per the caller's policy."""

from __future__ import annotations

from typing import Any

import orjson

from agentwatch.dlp.inspect import Inspection, request_slots, text_slots
from agentwatch.dlp.stream import StreamGuard
from agentwatch.errors import DlpBlocked
from agentwatch.proxy.call import Call
from agentwatch.state import AppState

# Answers that carry no text: vectors, token counts.
_NO_TEXT_ANSWERS = frozenset({"/v1/embeddings", "/v1/messages/count_tokens"})


def inspect_request(state: AppState, call: Call, endpoint: str, payload: dict[str, Any]) -> None:
    """Redacts `payload` in place; raises `DlpBlocked` when a finding's action is block."""
    principal = call.principal
    assert principal is not None
    policy = state.dlp.active_for(principal.org_id, principal.team_id, principal.tenant_id)
    if policy is None:
        return
    call.dlp = inspection = Inspection(policy, state.scanner)
    blocking = inspection.inspect(request_slots(endpoint, payload), "request")
    if blocking:
        raise DlpBlocked(blocking)


def _scans_answer(call: Call) -> Inspection | None:
    inspection = call.dlp
    if inspection is None or not inspection.policy.scan_responses:
        return None
    return None if call.endpoint in _NO_TEXT_ANSWERS else inspection


def inspect_response(call: Call, body: bytes) -> bytes:
    """The answer as the client may see it: redacted, or refused with `DlpBlocked`."""
    inspection = _scans_answer(call)
    if inspection is None:
        return body
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    recorded = len(inspection.events)
    blocking = inspection.inspect(list(text_slots(document)), "response")
    if blocking:
        raise DlpBlocked(blocking, where="response")
    if not any(event.action == "redact" for event in inspection.events[recorded:]):
        return body
    return orjson.dumps(document)


def response_guard(call: Call) -> StreamGuard | None:
    inspection = _scans_answer(call)
    return None if inspection is None else StreamGuard(inspection, call.endpoint)
