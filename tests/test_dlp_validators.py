"""Checksums and plausibility rules behind the DLP detectors, with public test numbers."""

import re
import zlib

import pytest

from agentwatch.dlp import validators as v


@pytest.mark.parametrize(
    "number", ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "6011000000000004"]
)
def test_known_good_cards(number: str) -> None:
    assert v.credit_card_valid(number)


@pytest.mark.parametrize("number", ["4111 1111 1111 1112", "1234567812345678", "0000000000000000"])
def test_bad_cards(number: str) -> None:
    assert not v.credit_card_valid(number)


def test_card_brand() -> None:
    assert v.card_brand("4111111111111111") == "visa"
    assert v.card_brand("5500000000000004") == "mastercard"
    assert v.card_brand("340000000000009") == "amex"


def test_iban() -> None:
    assert v.iban_valid("GB82 WEST 1234 5698 7654 32")
    assert v.iban_valid("DE89370400440532013000")
    assert not v.iban_valid("GB82 WEST 1234 5698 7654 33")  # checksum
    assert not v.iban_valid("GB82 WEST 1234 5698 7654 3")  # length for GB


def test_us_ssn_rules() -> None:
    assert v.us_ssn_valid("460-89-9847")
    for bad in ("000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"):
        assert not v.us_ssn_valid(bad), bad


def test_itin_and_aba() -> None:
    assert v.us_itin_valid("912-70-1234")
    assert not v.us_itin_valid("912-40-1234")
    assert v.aba_routing_valid("021000021")
    assert not v.aba_routing_valid("021000022")


def test_uk_nhs_ni_and_ca_sin() -> None:
    assert v.uk_nhs_valid("943 476 5919")
    assert not v.uk_nhs_valid("943 476 5918")
    assert v.uk_ni_valid("AB 12 34 56 C")
    assert not v.uk_ni_valid("GB 12 34 56 C")
    assert not v.uk_ni_valid("DA 12 34 56 C")
    assert v.ca_sin_valid("130 692 544")
    assert not v.ca_sin_valid("046 454 286")  # 0xx is never issued
    assert not v.ca_sin_valid("130 692 545")


def test_entropy_and_secret_shapes() -> None:
    assert v.shannon_entropy("aaaa") == 0.0
    assert v.shannon_entropy("abcd") == 2.0
    assert not v.random_token("3f786850e387550fdab836ed7e6dc881de23001b")  # git SHA
    assert not v.high_entropy_secret("123e4567-e89b-12d3-a456-426614174000")
    assert v.high_entropy_secret("q7Xv9LmP2rT8wZk4Nb6Yc1Hd5Jf3Gs0A")
    for placeholder in ("changeme", "xxxxxx", "<password>", "${DB_PASSWORD}", "your_password"):
        assert not v.not_placeholder(placeholder), placeholder
    assert v.not_placeholder("Tr0ub4dor&3x")


def test_random_hex_needs_128_bits_and_randomness() -> None:
    key = "5c1e8a9f03b74d26e1a8c4f7092b3d6e8f1a4c7b0e3d5f9a2c6b8e1d4f7a0c3b"
    assert v.random_hex(key) and v.high_entropy_secret(key)
    assert not v.random_hex(key[:31])  # shorter than 128 bits
    assert not v.random_hex("0123456789abcdef" * 4)  # a counting pattern, not random
    assert not v.random_hex("deadbeef" * 8)


def _luhn_completed(prefix: str) -> str:
    return next(prefix + d for d in "0123456789" if v.luhn_valid(prefix + d))


def test_card_number_accepts_unknown_issuers_but_holds_known_networks_to_their_lengths() -> None:
    assert v.card_number_valid("4111 1111 1111 1111")
    unknown_issuer = _luhn_completed("351042198765432")  # 3510: not JCB (3528-3589)
    assert v.card_number_valid(unknown_issuer) and not v.credit_card_valid(unknown_issuer)
    assert v.card_number_valid(_luhn_completed("880012345678901"))  # 88: no network here
    assert not v.card_number_valid(_luhn_completed("88001234567"))  # 12 digits, unknown issuer
    assert not v.card_number_valid(_luhn_completed("41111111111111"))  # Visa has no 15 digits
    assert not v.card_number_valid(_luhn_completed("3400000000000000"))  # Amex is 15 digits
    assert not v.card_number_valid("3510 4219 8765 4320")  # Luhn fails
    assert not v.card_number_valid("8888888888888888")


def test_known_iin_prefixes_are_exactly_the_ones_card_brand_names() -> None:
    known = re.compile(r"\d" + v.KNOWN_IIN_AFTER_FIRST_DIGIT)
    for prefix in range(10_000):
        head = f"{prefix:04d}"
        branded = any(v.card_brand(head + "0" * (n - 4)) for n in range(12, 20))
        assert bool(known.match(head + "0" * 12)) == branded, head


def test_phone_numbers_are_not_dates() -> None:
    assert v.phone_valid("467 3395") and v.phone_valid("(08) 8747 6301")
    assert not v.phone_valid("1987-11-02") and not v.phone_valid("02.11.1987")
    assert not v.phone_valid("12 34 56")  # six digits


def test_base62_and_crc32_tokens() -> None:
    assert v.base62(0, 6) == "000000" and v.base62(61, 2) == "0z" and v.base62(62, 2) == "10"
    body = "Wq4Lm8Zt2Rk7Bv1Nc5Xh9Jd3Fp6Sy0"
    token = "ghp_" + body + "351fjo"
    assert v.base62(zlib.crc32(body.encode()), 6) == "351fjo"
    assert v.crc32_token_valid(token)
    assert not v.crc32_token_valid(token[:-1] + "p")  # last checksum character changed
    assert not v.crc32_token_valid("ghp_" + body[::-1] + "351fjo")  # body changed
    assert v.crc32_token_valid("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")
    assert not v.crc32_token_valid("npm_Hx3Kp9Tz5Qw1Lm7Vb2Nr8Jc4Fd6Sg038ZRu5")
    # Fine-grained PATs carry no checksum we know: they only have to look random.
    assert v.crc32_token_valid("github_pat_11" + "Ab3dE5gH7jK9mN1pQ3sT5v" + "_" + "Xz9" * 19 + "Qw")
    assert not v.high_entropy_secret(token[:-1] + "p")  # the generic detector checks it too


@pytest.mark.parametrize(
    "value",
    [
        "insert-your-token-here",
        "sk-live-your-key",
        "AKIAEXAMPLEKEY0000",
        "<db password>",
        "{{ secrets.db }}",
        "[REDACTED]",
        "replace_with_real_key",
        "aaaaaaaaaaaa",
        "abc...",
    ],
)
def test_placeholders(value: str) -> None:
    assert v.is_placeholder(value)
    assert not v.not_placeholder(value)


@pytest.mark.parametrize(
    "value",
    [
        "config.secrets.db_password",
        "os.getenv(",
        "process.env.API_TOKEN",
        "vault.read(",
        "${APP_SECRET}",
        "$(pass show db)",
        "$SMTP_PASSWORD",
        "%(password)s",
        "%DB_PASS%",
        "SMTP_PASSWORD",
        "None",
        "undefined",
    ],
)
def test_code_expressions(value: str) -> None:
    assert v.is_code_expression(value)
    assert not v.not_placeholder(value)


@pytest.mark.parametrize(
    "value", ["Gr33n-Lantern!42", "$Xk9#mQ2vL7p", "Kestrel.Harbor77!", "X7K9Q2M4W8", "p@ss-2931-Zq"]
)
def test_real_looking_passwords_are_neither(value: str) -> None:
    assert not v.is_placeholder(value) and not v.is_code_expression(value)
    assert v.not_placeholder(value)
