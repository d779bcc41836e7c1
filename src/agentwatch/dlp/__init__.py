"""Data-loss prevention: find secrets, personal data and prompt injection in text."""

from agentwatch.dlp.engine import Scanner, default_scanner
from agentwatch.dlp.types import Action, Category, Detector, Finding, Gate, Rule, Severity

__all__ = [
    "Action", "Category", "Detector", "Finding", "Gate", "Rule", "Scanner", "Severity",
    "default_scanner",
]  # fmt: skip
