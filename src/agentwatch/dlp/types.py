"""The DLP vocabulary: severities, categories, findings and the shape of a detector."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Literal, NamedTuple

Action = Literal["block", "redact", "log", "off"]
Validator = Callable[[str], bool]


class Severity(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class Category(StrEnum):
    SECRET = "secret"
    PII = "pii"
    FINANCIAL = "financial"
    NETWORK = "network"
    INJECTION = "injection"


class Gate(StrEnum):
    """How the scanner finds the places where a detector's rules can match (see prefilter.py)."""

    KEYWORDS = "keywords"  # one of the detector's keywords, in any case, lies inside every match
    PATTERN = "pattern"  # each rule's own regex (or its `anchor`), prefiltered by Hyperscan
    NON_ASCII = "non_ascii"  # any non-ASCII character; the rules then run over the whole text
    # Earlier names of PATTERN, from when each shape had a trigger regex of its own.
    DIGITS = "pattern"
    HEX_COLON = "pattern"
    ALWAYS = "pattern"


@dataclass(frozen=True, slots=True)
class Finding:
    detector: str
    category: Category
    severity: Severity
    start: int  # character offsets into the scanned str, end exclusive
    end: int
    confidence: float  # 0..1


class Rule(NamedTuple):
    """One compiled pattern of a detector; group "value" (if any) is the reported span."""

    regex: re.Pattern[str]
    confidence: float
    needs_context: bool = False  # only reported when a context_raise word is near
    # A shorter regex that matches wherever the rule can (overlapping or touching its match):
    # the scanner looks for it instead of the rule's keywords, context words or own shape.
    anchor: str | None = None


@dataclass(frozen=True, slots=True)
class Detector:
    id: str
    category: Category
    severity: Severity
    default_action: Action
    rules: tuple[Rule, ...]
    gate: Gate = Gate.KEYWORDS
    # Lower-case literals; with Gate.KEYWORDS, one of them lies inside every match of a rule
    # that has no anchor and needs no context.
    keywords: tuple[str, ...] = ()
    validator: Validator | None = None  # run on the reported span; False rejects the match
    validator_name: str = ""
    context_raise: tuple[str, ...] = ()  # lower-case words that raise confidence nearby
    context_lower: tuple[str, ...] = ()  # lower-case words that lower it
    context_window: int = 40  # characters either side of the match searched for context
    window: int = 256  # the widest match assumed where a rule's regex has no upper bound
