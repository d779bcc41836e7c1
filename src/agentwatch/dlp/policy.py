"""The `dlp:` section of a config file: which action each detector's findings get."""

from __future__ import annotations

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

from agentwatch.dlp.detectors import BY_ID
from agentwatch.dlp.types import Action, Category, Detector


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
