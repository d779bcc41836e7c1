"""The DLP vocabulary: severities, categories, findings and the shape of a detector."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Literal, NamedTuple

Action = Literal["block", "redact", "log", "off"]
ACTIONS: tuple[Action, ...] = ("block", "redact", "log", "off")
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
    """What must be present in the text before a detector's regexes run at all."""

    KEYWORDS = "keywords"  # one of the detector's literal keywords (Aho-Corasick, any case)
    DIGITS = "digits"  # a run of at least four digits (single separators allowed)
    HEX_COLON = "hex_colon"  # ":<0-4 hex>:" as in IPv6 and MAC addresses
    NON_ASCII = "non_ascii"  # any non-ASCII character
    ALWAYS = "always"  # cheap, literal-led patterns scanned over the whole text


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


@dataclass(frozen=True, slots=True)
class Detector:
    id: str
    category: Category
    severity: Severity
    default_action: Action
    rules: tuple[Rule, ...]
    gate: Gate = Gate.KEYWORDS
    keywords: tuple[str, ...] = ()  # lower-case literals; any occurrence lets the rules run
    validator: Validator | None = None  # run on the reported span; False rejects the match
    validator_name: str = ""
    context_raise: tuple[str, ...] = ()  # lower-case words that raise confidence nearby
    context_lower: tuple[str, ...] = ()  # lower-case words that lower it
    context_window: int = 40  # characters either side of the match searched for context
    window: int = 256  # characters either side of a keyword hit that the rules scan
