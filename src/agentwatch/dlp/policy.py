"""DLP policies: the `dlp:` mapping (config file and database overrides), and their resolution
per caller into the action each detector's findings get."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.db.models import Organization, Team, Tenant
from agentwatch.dlp.detectors import BY_ID
from agentwatch.dlp.types import Action, Category, Detector

log = logging.getLogger(__name__)


class PolicyError(ValueError):
    pass


class DlpPolicy(BaseModel):
    """Most specific wins: detectors, then categories, then default_action, then built-in."""

    model_config = ConfigDict(extra="forbid")
    default_action: Action | None = None
    categories: dict[Category, Action] = {}
    detectors: dict[str, Action] = {}
    # Findings below this confidence are ignored (None: inherit; 0.0 at the top).
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    # Also scan what the model answers, streamed or not (None: inherit; off at the top).
    scan_responses: bool | None = None

    @field_validator("default_action", "categories", "detectors", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false; in this section it can only mean the action.
        if value is False:
            return "off"
        if isinstance(value, dict):
            return {k: "off" if v is False else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _known_detectors(self) -> DlpPolicy:
        unknown = sorted(set(self.detectors) - set(BY_ID))
        if unknown:
            raise ValueError(f"unknown detector ids: {', '.join(unknown)}")
        return self

    def action_for(self, detector: Detector) -> Action:
        if detector.id in self.detectors:
            return self.detectors[detector.id]
        if detector.category in self.categories:
            return self.categories[detector.category]
        return self.default_action or detector.default_action


def load_policy(path: Path) -> DlpPolicy:
    """The policy in a YAML config file's top-level `dlp:` mapping (built-ins when absent)."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    section = document.get("dlp") if isinstance(document, dict) else None
    if section is None:
        return DlpPolicy()
    try:
        return DlpPolicy.model_validate(section)
    except ValidationError as exc:
        raise PolicyError(f"{path}: dlp: {exc}") from exc


def overlay(base: DlpPolicy, override: DlpPolicy) -> DlpPolicy:
    """`override` on top of `base`: what it sets wins, what it leaves out is inherited."""
    return DlpPolicy.model_construct(
        default_action=override.default_action or base.default_action,
        categories={**base.categories, **override.categories},
        detectors={**base.detectors, **override.detectors},
        min_confidence=(
            override.min_confidence if override.min_confidence is not None else base.min_confidence
        ),
        scan_responses=(
            override.scan_responses if override.scan_responses is not None else base.scan_responses
        ),
    )


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """A resolved policy, ready for the hot path: the action of every detector not `off`."""

    actions: Mapping[str, Action]
    min_confidence: float
    scan_responses: bool

    @classmethod
    def resolve(cls, policy: DlpPolicy, detectors: Iterable[Detector]) -> ActivePolicy | None:
        """None when every detector is off: the call is not scanned at all."""
        actions: dict[str, Action] = {}
        for detector in detectors:
            action = policy.action_for(detector)
            if action != "off":
                actions[detector.id] = action
        if not actions:
            return None
        return cls(actions, policy.min_confidence or 0.0, bool(policy.scan_responses))


class PolicyBook:
    """Every level's policy (config file, organisations, teams, tenants), resolved on demand
    for a caller and remembered until the next reload replaces the book."""

    def __init__(
        self,
        base: DlpPolicy,
        detectors: Iterable[Detector],
        *,
        orgs: Mapping[int, DlpPolicy] | None = None,
        teams: Mapping[int, DlpPolicy] | None = None,
        tenants: Mapping[int, DlpPolicy] | None = None,
    ) -> None:
        self.base = base
        self._detectors = tuple(detectors)
        self._orgs = dict(orgs or {})
        self._teams = dict(teams or {})
        self._tenants = dict(tenants or {})
        self._resolved: dict[tuple[int, int | None, int | None], ActivePolicy | None] = {}

    def policy_for(self, org_id: int, team_id: int | None, tenant_id: int | None) -> DlpPolicy:
        policy = self.base
        for level, key in (
            (self._orgs, org_id),
            (self._teams, team_id),
            (self._tenants, tenant_id),
        ):
            override = level.get(key) if key is not None else None
            if override is not None:
                policy = overlay(policy, override)
        return policy

    def active_for(
        self, org_id: int, team_id: int | None, tenant_id: int | None
    ) -> ActivePolicy | None:
        key = (org_id, team_id, tenant_id)
        try:
            return self._resolved[key]
        except KeyError:
            active = ActivePolicy.resolve(self.policy_for(*key), self._detectors)
            if len(self._resolved) < MAX_RESOLVED:
                self._resolved[key] = active
            return active


MAX_RESOLVED = 50_000


def parse_stored(value: object) -> DlpPolicy | None:
    """A policy column's JSON; None (with a warning) when it is not a valid policy, so one bad
    row falls back to the level above instead of stopping the gateway."""
    if value is None:
        return None
    try:
        return DlpPolicy.model_validate(value)
    except ValidationError as exc:
        log.warning("ignoring an invalid stored DLP policy: %s", exc)
        return None


async def load_policy_book(
    session: AsyncSession, base: DlpPolicy, detectors: Iterable[Detector]
) -> PolicyBook:
    """The book with every organisation's, team's and tenant's override from the database."""
    levels: list[dict[int, DlpPolicy]] = []
    for model in (Organization, Team, Tenant):
        rows = await session.execute(
            select(model.id, model.dlp_policy).where(model.dlp_policy.is_not(None))
        )
        level: dict[int, DlpPolicy] = {}
        for row_id, stored in rows:
            policy = parse_stored(stored)
            if policy is not None:
                level[row_id] = policy
        levels.append(level)
    orgs, teams, tenants = levels
    return PolicyBook(base, detectors, orgs=orgs, teams=teams, tenants=tenants)
