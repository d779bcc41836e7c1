"""The admin password policy: each rule rejects what it should, with a message that never
echoes the password, and lets good passwords through."""

from __future__ import annotations

import random
import string
from importlib import resources

import pytest

from agentwatch.admin.passwords import (
    HISTORY_SIZE,
    MAX_LENGTH,
    MIN_LENGTH,
    PASSPHRASE_LENGTH,
    PasswordRejected,
    RejectionReason,
    check_password,
)
from agentwatch.crypto import hash_password

GOOD_PASSWORDS = [
    "correct horse battery staple",
    "Tr0ub4dor&3-zx9Q",
    "Xk9#mP2$vL7@",
    "Grüße-aus-Köln-42",
    "🔐 Kettle-Orbit-93",
    "lowercaseonlyxyz",
]


def common_list() -> list[str]:
    text = resources.files("agentwatch.admin").joinpath("common_passwords.txt").read_text("utf-8")
    return text.splitlines()


def rejection(password: str, **kwargs: object) -> PasswordRejected:
    with pytest.raises(PasswordRejected) as caught:
        check_password(password, **kwargs)  # type: ignore[arg-type]
    return caught.value


def assert_rejected(password: str, reason: RejectionReason, **kwargs: object) -> None:
    error = rejection(password, **kwargs)
    assert error.reason == reason, f"{password!r}: {error.reason} ({error})"


def random_password(length: int, seed: int) -> str:
    alphabet = string.ascii_letters + string.digits + "!#%&*+-=?@^_~"
    return "".join(random.Random(seed).choices(alphabet, k=length))


def test_policy_constants() -> None:
    assert (MIN_LENGTH, MAX_LENGTH, HISTORY_SIZE, PASSPHRASE_LENGTH) == (12, 256, 5, 16)
    assert issubclass(PasswordRejected, ValueError)


@pytest.mark.parametrize("password", GOOD_PASSWORDS)
def test_good_passwords_pass(password: str) -> None:
    check_password(password, email="alice.smith@example.com")


def test_length_bounds() -> None:
    assert_rejected("Xk9#mP2$vL7", "too_short")
    assert_rejected("", "too_short")
    check_password("Xk9#mP2$vL7@")
    check_password(random_password(MAX_LENGTH, seed=1))
    assert_rejected(random_password(MAX_LENGTH + 1, seed=1), "too_long")
    assert_rejected(random_password(10_000, seed=2), "too_long")


@pytest.mark.parametrize(
    "character", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\ud800"], ids=repr
)
def test_control_characters_are_rejected(character: str) -> None:
    assert_rejected(f"Xk9#mP2{character}$vL7@q", "control_character")


@pytest.mark.parametrize(
    "password",
    [
        "password1234",
        "Password123!",
        "P@ssw0rd2024!",
        "Passw0rd!!!!",
        "Trustno1!!!!",
        "Letmein12345",
        "IloveYou2024!",
        "Welcome2025!",
        "Dr4g0n-2024!",
        "M0nk3y!!2023",
        "Adm1n1strat0r",
        "Sunsh1ne2024!",
        "Hell0Kitty99!",
        "Agentwatch2024!",
        "Ch4ngem3!!!!",
        "Football#1234",
        "qwertyuiop12",
        "1qaz2wsx3edc",
        "123456!!!!!!",
    ],
)
def test_common_passwords_and_their_decorated_forms_are_rejected(password: str) -> None:
    assert_rejected(password, "common")


def test_every_listed_password_is_rejected_as_common() -> None:
    for entry in common_list():
        password = entry + "!" * max(0, MIN_LENGTH - len(entry))
        assert_rejected(password, "common")
        assert_rejected(password.upper(), "common")


def test_the_list_ships_in_the_package() -> None:
    listed = resources.files("agentwatch.admin").joinpath("common_passwords.txt")
    assert listed.is_file()
    lines = common_list()
    assert len(set(lines)) >= 500
    assert len(set(lines)) == len(lines)
    assert all(line == line.strip().lower() and line for line in lines)
    for expected in ["password", "123456", "qwerty", "letmein", "iloveyou", "admin", "trustno1"]:
        assert expected in lines
    for expected in ["welcome", "dragon", "monkey", "passw0rd", "changeme", "agentwatch"]:
        assert expected in lines
    assert not {password.lower() for password in GOOD_PASSWORDS} & set(lines)


@pytest.mark.parametrize(
    "password",
    [
        "zzzzzzzzzzzz",
        "ZZZZZZZZZZZZZZZZ",
        "1111111111111111",
        "!!!!!!!!!!!!",
        "xyxyxyxyxyxy",
        "Abc1!Abc1!Abc1!",
        "passwordpassword",
        "qqqqqqqqqqqq1!",
    ],
)
def test_a_short_unit_repeated_is_rejected(password: str) -> None:
    assert_rejected(password, "repeated")


def test_a_repeated_unit_of_full_length_is_allowed() -> None:
    check_password("Xk9#mP2$vL7@Xk9#mP2$vL7@")


@pytest.mark.parametrize(
    "password",
    [
        "bcdefghijklm",
        "XYZABCDEFGHI",
        "srqponmlkjih",
        "123456789012",
        "3456789012345678",
        "tyuiopasdfgh",
        "fghjklzxcvbn",
        "2wsx3edc4rfv5tgb",
        "Hijklmnop123!",
    ],
)
def test_a_single_sequential_run_is_rejected(password: str) -> None:
    assert_rejected(password, "sequential")


def test_a_run_inside_a_longer_password_is_allowed() -> None:
    check_password("Abcdefgh-Zq7!")


@pytest.mark.parametrize(
    "password",
    [
        "Alice-Rocks-9!x",
        "ALICE.SMITH@EXAMPLE.COM",
        "Sm1th-Rocks-9!x",
        "Example-9!xQzw",
        "Zq9!example.com",
    ],
)
def test_the_email_or_its_parts_are_rejected(password: str) -> None:
    assert_rejected(password, "contains_email", email="alice.smith@example.com")
    check_password(password)
    check_password(password, email="ops@acme.io")


def test_short_email_parts_are_ignored() -> None:
    check_password("Bob-Kx9$mPq2vL", email="bob@x.io")
    assert_rejected("Bobby-Kx9$mPq2vL", "contains_email", email="bobby@x.io")
    assert_rejected("Kx9$mPq2vL-4cme", "contains_email", email="ops@acme.io")


@pytest.mark.parametrize(
    "password", ["lowercase1234", "UPPER-CASE-ONLY", "only-lower-case", "lowercaseonlyxy"]
)
def test_fewer_than_three_classes_needs_sixteen_characters(password: str) -> None:
    assert_rejected(password, "too_simple")
    check_password(password + "q" * (PASSPHRASE_LENGTH - len(password)))


def test_three_classes_suffice_below_sixteen_characters() -> None:
    check_password("Mixedcase1234")
    check_password("mixed-case-1234")


def test_reuse_of_a_recent_password_is_rejected() -> None:
    recent = ["Xk9#mP2$vL7@q", "Tr0ub4dor&3-zx9Q", "Grüße-aus-Köln-42"]
    hashes = [hash_password(password) for password in recent]
    for password in recent:
        error = rejection(password, previous_hashes=hashes)
        assert error.reason == "reused"
        assert str(error) == "Password must not repeat one of your last 5 passwords."
    check_password("Fresh-Kettle-73!", previous_hashes=hashes)
    check_password("xk9#mp2$vl7@Q", previous_hashes=hashes)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("Xk9#mP2", "too_short"),
        (random_password(MAX_LENGTH + 1, seed=3), "too_long"),
        ("Xk9#mP2\x00$vL7@q", "control_character"),
        ("P@ssw0rd2024!", "common"),
        ("Abc1!Abc1!Abc1!", "repeated"),
        ("Hijklmnop123!", "sequential"),
        ("Alice-Rocks-9!x", "contains_email"),
        ("lowercase1234", "too_simple"),
        ("Tr0ub4dor&3-zx9Q", "reused"),
    ],
)
def test_messages_are_sentences_without_the_password(password: str, reason: str) -> None:
    history = [hash_password("Tr0ub4dor&3-zx9Q")] if reason == "reused" else []
    error = rejection(password, email="alice@example.com", previous_hashes=history)
    assert error.reason == reason
    message = str(error)
    assert message.startswith("Password ") and message.endswith(".")
    for piece in {password, password.lower(), password[:8], password[-8:]}:
        assert piece not in message
