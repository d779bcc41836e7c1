"""DLP in the admin API: policy overrides on organisations, teams and tenants (a field of each),
and the list of built-in detectors those policies name."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter
from pydantic import BaseModel, Field, JsonValue

from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.pages import Page
from agentwatch.dlp.detectors import BUILTIN
from agentwatch.dlp.policy import DlpPolicy
from agentwatch.dlp.types import Action, Category, Detector

router = APIRouter(prefix="/api/dlp", tags=["dlp"])

# In answers, the override as stored (the DlpPolicy fields that are set), or null: inherit.
# Not re-validated on the way out: a stored policy naming a detector a later release dropped
# must still be readable (and fixable), not turn every read of its row into a 500.
StoredPolicy = Annotated[
    dict[str, JsonValue] | None,
    Field(description="the DLP policy override (a DlpPolicy); null: inherited"),
]
SeverityName = Literal["low", "medium", "high", "critical"]


class PolicyHolder(Protocol):
    dlp_policy: dict[str, Any] | None


def stored_policy(policy: DlpPolicy | None) -> dict[str, Any] | None:
    """The `dlp_policy` column's value for a validated policy: its set fields as JSON."""
    return None if policy is None else policy.model_dump(exclude_none=True, mode="json")


def authorize_new_policy(ctx: AdminContext, policy: DlpPolicy | None) -> dict[str, Any] | None:
    """The column value for a row being created; setting one needs `dlp:write`."""
    value = stored_policy(policy)
    if value is not None:
        ctx.authorize("dlp:write")
    return value


def patch_policy(
    ctx: AdminContext,
    row: PolicyHolder,
    policy: DlpPolicy | None,
    before: dict[str, Any],
    after: dict[str, Any],
) -> bool:
    """Give `row` the policy a PATCH sent (null clears it), recording the change in the audit
    summaries; True when it changed. A change needs `dlp:write` organisation-wide, beyond the
    row's own write permission: a team admin may edit their team's tenants, not weaken the
    organisation's DLP for them. Sending back the stored policy unchanged needs nothing more."""
    value = stored_policy(policy)
    if value == row.dlp_policy:
        return False
    ctx.authorize("dlp:write")
    before["dlp_policy"] = row.dlp_policy
    after["dlp_policy"] = value
    row.dlp_policy = value
    return True


class DetectorOut(BaseModel):
    id: str
    category: Category
    severity: SeverityName
    default_action: Action
    validator_name: str | None = Field(description="the check a match must pass; null: none")
    description: str | None


DetectorsRead = Annotated[AdminContext, require("detectors:read")]


@router.get("/detectors", response_model=Page[DetectorOut])
async def list_detectors(ctx: DetectorsRead) -> Page[DetectorOut]:
    """Every built-in detector: the ids and categories a `dlp_policy` may name."""
    return Page[DetectorOut](data=[_detector_out(d) for d in BUILTIN], next_cursor=None)


def _detector_out(detector: Detector) -> DetectorOut:
    return DetectorOut.model_validate(
        {
            "id": detector.id,
            "category": detector.category,
            "severity": detector.severity.name.lower(),
            "default_action": detector.default_action,
            "validator_name": detector.validator_name or None,
            # The engine's Detector has no description yet; shown once it carries one.
            "description": getattr(detector, "description", None) or None,
        }
    )
