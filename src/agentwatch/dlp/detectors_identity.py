"""Financial and identity-number detectors: cards, IBAN, national ids, dates of birth."""

from __future__ import annotations

import re

from agentwatch.dlp import validators as v
from agentwatch.dlp.types import Category, Detector, Gate, Rule, Severity

_PII, _FIN = Category.PII, Category.FINANCIAL
_ID_LOWER = ("order", "invoice", "tracking", "ticket", "serial", "ref", "sku", "isbn")
# After a card number's first digit: 4-4-4-1..7, Amex/Diners 4-6-4..5, or 12-19 digits bare.
_CARD_TAIL = (
    r"(?:\d{3}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,7}|\d{3}[ -]?\d{6}[ -]?\d{4,5}|\d{11,18})(?![\w-])"
)

IDENTITY: tuple[Detector, ...] = (
    Detector(
        "credit_card", _FIN, Severity.HIGH, "redact",
        # A known network's prefix anywhere; any other issuer prefix only near a card word.
        (Rule(re.compile(rf"\d(?<![\w-]\d){v.KNOWN_IIN_AFTER_FIRST_DIGIT}{_CARD_TAIL}"), 0.9),
         Rule(re.compile(rf"\d(?<![\w-]\d){_CARD_TAIL}"), 0.6, needs_context=True)),
        gate=Gate.DIGITS, validator=v.card_number_valid,
        validator_name="Luhn + card network prefix and length",
        context_raise=("card", "visa", "mastercard", "amex", "credit", "debit", "cc ", "cc#",
                       "cc:", "cvv", "cvc"),
        context_lower=_ID_LOWER,
    ),
    Detector(
        "iban", _FIN, Severity.HIGH, "redact",
        (Rule(re.compile(r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
              0.95),),
        gate=Gate.DIGITS, validator=v.iban_valid, validator_name="mod-97 + country length",
        context_raise=("iban", "account", "bank", "transfer"),
    ),
    Detector(
        "us_ssn", _PII, Severity.HIGH, "redact",
        (Rule(re.compile(r"\d(?<![\d-]\d)\d{2}([- ])\d{2}\1\d{4}(?![\d-])"), 0.85),
         Rule(re.compile(r"\d(?<![\w-]\d)\d{8}(?![\w-])"), 0.6, needs_context=True)),
        gate=Gate.DIGITS, validator=v.us_ssn_valid, validator_name="SSA area/group/serial rules",
        context_raise=("ssn", "social security", "social sec", "ss#", "ss #"),
        context_lower=(*_ID_LOWER, "phone", "tel", "fax", "zip"),
    ),
    Detector(
        "us_itin", _PII, Severity.HIGH, "redact",
        (Rule(re.compile(r"9(?<![\d-]9)\d{2}([- ]?)\d{2}\1\d{4}(?![\d-])"), 0.75),),
        gate=Gate.DIGITS, validator=v.us_itin_valid, validator_name="ITIN group ranges",
        context_raise=("itin", "taxpayer", "tax id", "tin"), context_lower=_ID_LOWER,
    ),
    Detector(
        "aba_routing", _FIN, Severity.MEDIUM, "redact",
        (Rule(re.compile(r"[0-38](?<![\w-][0-38])\d{8}(?![\w-])"), 0.85, needs_context=True,
              anchor=r"[0-38]\d{8}"),),
        gate=Gate.DIGITS, validator=v.aba_routing_valid, validator_name="ABA checksum (3-7-1)",
        context_raise=("routing", "aba", "rtn", "transit", "ach", "wire"),
    ),
    Detector(
        "uk_nhs", _PII, Severity.HIGH, "redact",
        (Rule(re.compile(r"\d(?<![\w-]\d)\d{2}([ -]?)\d{3}\1\d{4}(?![\w-])"), 0.9,
              needs_context=True),),
        gate=Gate.DIGITS, validator=v.uk_nhs_valid, validator_name="NHS mod 11",
        context_raise=("nhs", "health service", "patient", "chi number"),
    ),
    Detector(
        "uk_ni", _PII, Severity.HIGH, "redact",
        (Rule(re.compile(r"(?i)\b[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), 0.8),),
        gate=Gate.DIGITS, validator=v.uk_ni_valid, validator_name="NI prefix/suffix rules",
        context_raise=("national insurance", "nino", "ni number", "ni no"),
    ),
    Detector(
        "ca_sin", _PII, Severity.HIGH, "redact",
        (Rule(re.compile(r"\d(?<![\w-]\d)\d{2}([ -]?)\d{3}\1\d{3}(?![\w-])"), 0.85,
              needs_context=True, anchor=r"\d{3}[ -]?\d{3}[ -]?\d{3}"),),
        gate=Gate.DIGITS, validator=v.ca_sin_valid, validator_name="Luhn",
        context_raise=("sin", "social insurance", "nas"),
    ),
    Detector(
        "date_of_birth", _PII, Severity.MEDIUM, "redact",
        (Rule(re.compile(r"(?<![\d/.-])(?:\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)\d{2}"
                         r"|(?:19|20)\d{2}-\d{1,2}-\d{1,2})(?![\d/.-])"), 0.8,
              needs_context=True),),
        gate=Gate.DIGITS, validator=v.date_valid, validator_name="calendar date in the past",
        context_raise=("born", "dob", "d.o.b", "date of birth", "birth date", "birthday",
                       "birthdate"),
    ),
    Detector(
        "passport", _PII, Severity.HIGH, "redact",
        (Rule(re.compile(r"\b(?=[A-Z0-9]*\d)[A-Z0-9]{1,2}\d{6,8}\b"), 0.8, needs_context=True),),
        keywords=("passport",), validator_name="", context_raise=("passport",),
        context_window=48, window=80,
    ),
    Detector(
        "us_bank_account", _FIN, Severity.MEDIUM, "redact",
        (Rule(re.compile(r"(?<![\w-])\d{8,17}(?![\w-])"), 0.7, needs_context=True),),
        keywords=("account", "acct"),
        context_raise=("account number", "account no", "acct", "bank account", "checking",
                       "savings"),
        context_window=48, window=96,
    ),
    Detector(
        "swift_bic", _FIN, Severity.LOW, "log",
        (Rule(re.compile(r"\b[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b"), 0.75,
              needs_context=True),),
        keywords=("swift", "bic"), context_raise=("swift", "bic"), window=64,
    ),
)  # fmt: skip
