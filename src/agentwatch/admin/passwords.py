"""Password policy for admin accounts: `check_password` raises `PasswordRejected` with a sentence
fit to show the user, or returns None when the password may be set."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Literal, NoReturn

from agentwatch.crypto import verify_password

MIN_LENGTH = 12
# Every login hashes the password with argon2; an unbounded length is a cost lever for an attacker.
MAX_LENGTH = 256
HISTORY_SIZE = 5
# From this length a password may use fewer than three character classes (a passphrase).
PASSPHRASE_LENGTH = 16

RejectionReason = Literal[
    "too_short",
    "too_long",
    "control_character",
    "common",
    "repeated",
    "sequential",
    "contains_email",
    "too_simple",
    "reused",
]

_COMMON_PASSWORDS_FILE = "common_passwords.txt"
# Email parts shorter than this are too likely to occur by chance in a good password.
_MIN_EMAIL_PART = 4
# A stem shorter than this is checked against the list only, not for patterns.
_MIN_PATTERN_STEM = 6
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
# 1 reads as either i or l, so each leet-normalised form comes in two spellings.
_LEET_TABLES = [str.maketrans({**_LEET, "1": letter}) for letter in ("i", "l")]
# Runs typed by walking along the alphabet, the digits or a keyboard; checked in both directions.
_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
    "!@#$%^&*()",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik,9ol.0p;/",
    "qazwsxedcrfvtgbyhnujmik,ol.p;/",
)
_EMAIL_SEPARATORS = re.compile(r"[._+\-]+")


class PasswordRejected(ValueError):
    """The password breaks the policy; `str()` is a sentence for the user, never the password."""

    def __init__(self, reason: RejectionReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectionReason = reason


def check_password(
    password: str, *, email: str | None = None, previous_hashes: Sequence[str] = ()
) -> None:
    """Raise `PasswordRejected` unless `password` may be set for the account with `email`.

    `previous_hashes` are the argon2 hashes of the account's last `HISTORY_SIZE` passwords; each
    one costs an argon2 verification, so the caller passes no more than that.
    """
    if len(password) < MIN_LENGTH:
        _reject("too_short", f"Password must be at least {MIN_LENGTH} characters long.")
    if len(password) > MAX_LENGTH:
        _reject("too_long", f"Password must be at most {MAX_LENGTH} characters long.")
    if any(_is_forbidden_character(char) for char in password):
        _reject(
            "control_character",
            "Password must not contain control characters such as NUL, tab or a line break.",
        )
    lowered = password.lower()
    stems = list(_stems(lowered))
    common = _common_passwords()
    if any(form in common for stem in stems for form in _spellings(stem)):
        _reject("common", "Password is too common: it appears in lists of breached passwords.")
    pattern_stems = [lowered, *(stem for stem in stems if len(stem) >= _MIN_PATTERN_STEM)]
    if any(_is_short_repetition(stem) for stem in pattern_stems):
        _reject("repeated", "Password must not be a short run of characters repeated.")
    if any(_is_sequential(stem) for stem in pattern_stems):
        _reject(
            "sequential",
            "Password must not be a run of consecutive letters, digits or keyboard keys.",
        )
    if email is not None and _contains_email_part(lowered, email):
        _reject("contains_email", "Password must not contain your email address or part of it.")
    if _character_classes(password) < 3 and len(password) < PASSPHRASE_LENGTH:
        _reject(
            "too_simple",
            f"Password must be at least {PASSPHRASE_LENGTH} characters long, or mix at least "
            "three of: lower-case letters, upper-case letters, digits and symbols.",
        )
    if any(verify_password(previous, password) for previous in previous_hashes):
        _reject("reused", f"Password must not repeat one of your last {HISTORY_SIZE} passwords.")


def _reject(reason: RejectionReason, message: str) -> NoReturn:
    raise PasswordRejected(reason, message)


@functools.cache
def _common_passwords() -> frozenset[str]:
    text = resources.files("agentwatch.admin").joinpath(_COMMON_PASSWORDS_FILE).read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def _is_forbidden_character(char: str) -> bool:
    # Cc covers NUL, tab, line breaks, DEL and the C1 controls; an unpaired surrogate (Cs) cannot
    # be encoded to UTF-8, so it would fail in the hasher rather than here.
    return unicodedata.category(char) in {"Cc", "Cs"}


def _stems(lowered: str) -> Iterator[str]:
    """The password, then each prefix left by dropping trailing digits and symbols one by one.

    A password without letters only sheds trailing symbols, or every digit-only password would
    match a short all-digit entry in the list by one of its prefixes.
    """
    stops_at = str.isalpha if any(char.isalpha() for char in lowered) else str.isalnum
    yield lowered
    end = len(lowered)
    while end > 0 and not stops_at(lowered[end - 1]):
        end -= 1
        yield lowered[:end]


def _spellings(stem: str) -> set[str]:
    return {stem, *(stem.translate(table) for table in _LEET_TABLES)}


def _is_short_repetition(text: str) -> bool:
    # "aaaa…", "abab…" and "Abc1!Abc1!…" are only as strong as the unit they repeat.
    for unit in range(1, min(len(text) // 2, MIN_LENGTH - 1) + 1):
        if len(text) % unit == 0 and text == text[:unit] * (len(text) // unit):
            return True
    return False


def _is_sequential(text: str) -> bool:
    for sequence in _SEQUENCES:
        for direction in (sequence, sequence[::-1]):
            # Walks wrap around ("…7890123"), so search a repetition long enough for the text.
            cycled = direction * (len(text) // len(direction) + 2)
            if text in cycled:
                return True
    return False


def _email_parts(email: str) -> set[str]:
    local, _, domain = email.lower().strip().rpartition("@")
    if not local:
        local, domain = domain, ""
    parts = {local, *_EMAIL_SEPARATORS.split(local)}
    if domain:
        # The top-level label ("com", "io") says nothing about the account; the others do.
        parts.update({domain, *domain.split(".")[:-1]})
    return {part for part in parts if len(part) >= _MIN_EMAIL_PART}


def _contains_email_part(lowered: str, email: str) -> bool:
    spellings = _spellings(lowered)
    return any(part in form for part in _email_parts(email) for form in spellings)


def _character_classes(password: str) -> int:
    lower = any(char.islower() for char in password)
    upper = any(char.isupper() for char in password)
    digit = any(char.isdigit() for char in password)
    symbol = any(not (char.islower() or char.isupper() or char.isdigit()) for char in password)
    return lower + upper + digit + symbol
