"""Checksums and plausibility checks that turn weak pattern matches into strong ones."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections import Counter
from datetime import date

_NON_DIGITS = re.compile(r"\D")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


def digits_of(text: str) -> str:
    return _NON_DIGITS.sub("", text)


def luhn_valid(number: str) -> bool:
    digits = digits_of(number)
    if not digits:
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_brand(number: str) -> str | None:
    """The card network for a number by its IIN prefix and length, or None."""
    d = digits_of(number)
    n = len(d)
    if d[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= int(d[:2]) <= 55 or 2221 <= int(d[:4]) <= 2720) and n == 16:
        return "mastercard"
    if d[:2] in ("34", "37") and n == 15:
        return "amex"
    if (d[:4] == "6011" or d[:2] == "65" or 644 <= int(d[:3]) <= 649) and 16 <= n <= 19:
        return "discover"
    if 3528 <= int(d[:4]) <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (d[:2] in ("36", "38", "39") or 300 <= int(d[:3]) <= 305) and 14 <= n <= 19:
        return "diners"
    if d[:2] == "62" and 16 <= n <= 19:
        return "unionpay"
    if d[:4] in ("2131", "1800") and n == 15:
        return "jcb"
    if d[:2] in ("50", "56", "57", "58", "63", "67") and 12 <= n <= 19:
        return "maestro"
    if d[0] == "6" and 12 <= n <= 19:
        return "maestro"
    return None


def credit_card_valid(number: str) -> bool:
    d = digits_of(number)
    return 12 <= len(d) <= 19 and len(set(d)) > 1 and luhn_valid(d) and card_brand(d) is not None


IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(text: str) -> bool:
    iban = _NON_ALNUM.sub("", text).upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def us_ssn_valid(text: str) -> bool:
    d = digits_of(text)
    if len(d) != 9:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return d not in ("078051120", "219099999", "123456789") and len(set(d)) > 1


def us_itin_valid(text: str) -> bool:
    d = digits_of(text)
    if len(d) != 9 or d[0] != "9":
        return False
    group = int(d[3:5])
    return 50 <= group <= 65 or 70 <= group <= 88 or 90 <= group <= 92 or 94 <= group <= 99


def aba_routing_valid(text: str) -> bool:
    d = digits_of(text)
    if len(d) != 9 or int(d[:2]) not in (*range(0, 13), *range(21, 33), *range(61, 73), 80):
        return False
    weights = (3, 7, 1) * 3
    return sum(int(c) * w for c, w in zip(d, weights, strict=True)) % 10 == 0 and d != "0" * 9


def uk_nhs_valid(text: str) -> bool:
    d = digits_of(text)
    if len(d) != 10 or len(set(d)) == 1:
        return False
    remainder = sum(int(c) * (10 - i) for i, c in enumerate(d[:9])) % 11
    check = 11 - remainder
    if check == 11:
        check = 0
    return check != 10 and check == int(d[9])


_NI = re.compile(r"^[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]$")
_NI_BAD_PREFIXES = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})


def uk_ni_valid(text: str) -> bool:
    ni = _NON_ALNUM.sub("", text).upper()
    return bool(_NI.match(ni)) and ni[:2] not in _NI_BAD_PREFIXES


def ca_sin_valid(text: str) -> bool:
    d = digits_of(text)
    return len(d) == 9 and d[0] not in "08" and luhn_valid(d)


def shannon_entropy(text: str) -> float:
    """Bits per character of `text` by its own character frequencies."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def ipv4_valid(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts)


def ipv6_valid(text: str) -> bool:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return text.count(":") >= 2 and int(address) > 1 and sum(c.isalnum() for c in text) >= 4


_DATE = re.compile(r"(\d{1,4})[/.-](\d{1,2})[/.-](\d{1,4})")


def date_valid(text: str) -> bool:
    match = _DATE.fullmatch(text)
    if not match:
        return False
    a, b, c = (int(g) for g in match.groups())
    candidates = [(a, b, c)] if a > 31 else [(c, b, a), (c, a, b)]
    for year, month, day in candidates:
        try:
            if 1900 <= year <= date.today().year and date(year, month, day) <= date.today():
                return True
        except ValueError:
            continue
    return False


def jwt_valid(text: str) -> bool:
    header = text.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded)


_PLACEHOLDER_WORDS = (
    "changeme", "change_me", "password", "passwd", "secret", "example", "sample", "dummy",
    "placeholder", "your", "redacted", "xxxx", "****", "test", "null", "none", "true",
    "false", "undefined", "todo", "fixme", "foobar", "123456", "qwerty", "letmein", "hunter2",
    "mypassword", "admin",
)  # fmt: skip
_PLACEHOLDER_SHAPE = re.compile(
    r"^(?:[<{\[$%].*|.*[>}\]]$|(.)\1+|os\.|env\.|process\.|getenv|.*\(.*|[A-Z][A-Z0-9_]+)$"
)


def not_placeholder(value: str) -> bool:
    """False for values that are obviously stand-ins: changeme, xxx, <password>, ${VAR}."""
    lowered = value.strip("'\"`").lower()
    if len(lowered) < 4 or _PLACEHOLDER_SHAPE.match(value.strip("'\"`")):
        return False
    if re.search(r"x{4,}|\*{3,}|\.\.\.|(.)\1{5,}", lowered):
        return False
    return not any(word == lowered or lowered.startswith(word) for word in _PLACEHOLDER_WORDS)


_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def looks_random(value: str, *, min_entropy: float = 3.0) -> bool:
    """A token with letters and digits, high entropy, and not a placeholder."""
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return (
        has_digit
        and has_alpha
        and shannon_entropy(value) >= min_entropy
        and "EXAMPLE" not in value.upper()
        and not re.search(r"(?i)x{6,}|0{8,}|(?:abc|123){3}", value)
    )


def high_entropy_secret(value: str) -> bool:
    """Random-looking, but not a git SHA, a hex digest, a UUID or a plain word."""
    if _HEX.match(value) or _UUID.match(value):
        return False
    has_upper = any(c.isupper() for c in value)
    has_lower = any(c.islower() for c in value)
    threshold = 4.0 if len(value) >= 32 else 3.5
    return has_upper and has_lower and looks_random(value, min_entropy=threshold)


def aws_secret_valid(value: str) -> bool:
    return high_entropy_secret(value)
