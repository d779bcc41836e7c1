"""Checksums and plausibility checks that turn weak pattern matches into strong ones."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
import zlib
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


# The issuer prefixes `card_brand` knows, whatever the length: Visa 4, Mastercard 51-55 and
# 2221-2720, Maestro 50 and 56-58, Amex 34 and 37, Diners 300-305, 36, 38 and 39, JCB 3528-3589,
# 2131 and 1800, and everything from 6 (Discover, UnionPay, Maestro).  Written as a check that
# runs just after a number's first digit was consumed, as the detector's digit-led regex needs.
KNOWN_IIN_AFTER_FIRST_DIGIT = (
    r"(?:(?<=[46])|(?<=5)(?=[0-8])|(?<=3)(?=0[0-5]|[46-9]|5(?:2[89]|[3-8]))"
    r"|(?<=2)(?=22[1-9]|2[3-9]|[3-6]|7[01]|720|131)|(?<=1)(?=800))"
)
_KNOWN_IIN = re.compile(r"\d" + KNOWN_IIN_AFTER_FIRST_DIGIT)


def card_number_valid(number: str) -> bool:
    """A valid card of a known network, or a Luhn-valid 13-19 digit number from an issuer
    prefix no network here claims (private-label and newly assigned ranges)."""
    d = digits_of(number)
    if not (12 <= len(d) <= 19 and len(set(d)) > 1 and luhn_valid(d)):
        return False
    if _KNOWN_IIN.match(d):
        return card_brand(d) is not None  # a known network's prefix must have its length
    return len(d) >= 13


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


def phone_valid(text: str) -> bool:
    """7-15 digits, and not a calendar date written with separators (1978-04-13)."""
    return 7 <= len(digits_of(text)) <= 15 and not date_valid(text)


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
# Stand-in markers anywhere in a value (AWS's documented ...EXAMPLEKEY, sk-your-key-here), and
# words that mark it when they are one of its dash/underscore/dot-separated parts.
_PLACEHOLDER_MARKERS = re.compile(
    r"example|changeme|change_me|placeholder|redacted|replace|dummy|your[-_]|x{4,}|\*{3,}|\.\.\."
    r"|(.)\1{5,}"
)
_PLACEHOLDER_PARTS = frozenset({"your", "here", "todo", "fixme", "tbd", "none", "null"})
_PLACEHOLDER_SHAPE = re.compile(r"<.*|.*>|\{.*|.*\}|(.)\1+")
# Code that reads a secret from elsewhere instead of holding it.
_CODE_EXPRESSION = re.compile(
    r"""
    [A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:[.(\[].*)?  # attribute access: settings.API_KEY, os.environ[
    | [A-Za-z_][\w.]*[(\[].*                      # a call or subscript: getpass(, env["PW"]
    | \$(?:\{|\(|[A-Z_][A-Z0-9_]*$).*              # a shell variable: ${PW}, $(vault ...), $PW
    | %\(\w+\)s | %[A-Z_]+%                        # printf and Windows variables: %(pw)s, %PW%
    | [A-Z_][A-Z0-9_]*_[A-Z0-9_]* | [A-Z]+         # another variable's name: DB_PASSWORD
    | (?i:none|null|nil|undefined|true|false|raise|return|await|self|this|input)
    """,
    re.VERBOSE,
)


def is_placeholder(value: str) -> bool:
    """A stand-in rather than a secret: changeme, xxxx, <password>, {{ x }}, sk-your-key-here."""
    lowered = value.lower()
    if (
        len(value) < 4
        or _PLACEHOLDER_SHAPE.fullmatch(value)
        or _PLACEHOLDER_MARKERS.search(lowered)
    ):
        return True
    if _PLACEHOLDER_PARTS.intersection(re.split(r"[-_.\s/:]+", lowered)):
        return True
    return any(word == lowered or lowered.startswith(word) for word in _PLACEHOLDER_WORDS)


def is_code_expression(value: str) -> bool:
    """Code that fetches a secret: os.environ[...], settings.API_KEY, ${DB_PASSWORD}, raise."""
    return bool(_CODE_EXPRESSION.fullmatch(value))


def not_placeholder(value: str) -> bool:
    """False for values that are obviously stand-ins or code: changeme, <password>, ${VAR}."""
    bare = value.strip("'\"`")
    return not is_placeholder(bare) and not is_code_expression(bare)


_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_REPEATED_UNIT = re.compile(r"(.{1,16}?)\1+")  # deadbeefdeadbeef, 0123456789abcdef0123...


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
        and not _REPEATED_UNIT.fullmatch(value)
    )


def random_token(value: str) -> bool:
    """Random-looking mixed-case text, but not a git SHA, a hex digest, a UUID or a word."""
    if _HEX.match(value) or _UUID.match(value):
        return False
    has_upper = any(c.isupper() for c in value)
    has_lower = any(c.islower() for c in value)
    threshold = 4.0 if len(value) >= 32 else 3.5
    return has_upper and has_lower and looks_random(value, min_entropy=threshold)


def random_hex(value: str) -> bool:
    """A random-looking hex string of at least 128 bits, such as a 64-hex signing key."""
    return len(value) >= 32 and bool(_HEX.match(value)) and looks_random(value, min_entropy=3.0)


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CRC32_TOKEN = re.compile(r"(?:gh[pousr]|npm)_[A-Za-z0-9]{36}$")


def base62(number: int, width: int) -> str:
    digits = ""
    while number:
        number, remainder = divmod(number, 62)
        digits = _BASE62[remainder] + digits
    return digits.rjust(width, "0")


def crc32_token_valid(token: str) -> bool:
    """GitHub (ghp_, gho_, ghu_, ghs_, ghr_) and npm (npm_) tokens end in a 6-character base62
    CRC32 of the 30 random characters before it; other lengths and github_pat_ tokens carry no
    checksum we know, so they only have to look random."""
    if token.startswith("github_pat_"):
        return looks_random(token[len("github_pat_") :])
    body = token.partition("_")[2]
    if len(body) != 36:
        return looks_random(body)
    return base62(zlib.crc32(body[:30].encode()), 6) == body[30:]


def high_entropy_secret(value: str) -> bool:
    """A random token, or random hex (the detector hands hex over only when it is assigned to a
    secret's name, so git SHAs and digests in running text never get here).  A value in a
    format that carries a checksum is judged by its checksum."""
    if _CRC32_TOKEN.match(value):
        return crc32_token_valid(value)
    return random_token(value) or random_hex(value)


def assigned_secret_valid(value: str) -> bool:
    """A value assigned to a secret's name: not a stand-in or code, and if it is in a format
    that carries a checksum, the checksum holds."""
    bare = value.strip("'\"`")
    if _CRC32_TOKEN.match(bare):
        return crc32_token_valid(bare)
    return not_placeholder(bare)


def aws_secret_valid(value: str) -> bool:
    return random_token(value)
