"""Every built-in detector, by family."""

from __future__ import annotations

from agentwatch.dlp.detectors_identity import IDENTITY
from agentwatch.dlp.detectors_injection import INJECTION
from agentwatch.dlp.detectors_network import NETWORK
from agentwatch.dlp.detectors_secrets import SECRETS
from agentwatch.dlp.types import Detector

BUILTIN: tuple[Detector, ...] = (*IDENTITY, *NETWORK, *SECRETS, *INJECTION)
BY_ID: dict[str, Detector] = {d.id: d for d in BUILTIN}
