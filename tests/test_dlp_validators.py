"""Checksums and plausibility rules behind the DLP detectors, with public test numbers."""

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
    assert not v.high_entropy_secret("3f786850e387550fdab836ed7e6dc881de23001b")  # git SHA
    assert not v.high_entropy_secret("123e4567-e89b-12d3-a456-426614174000")
    assert v.high_entropy_secret("q7Xv9LmP2rT8wZk4Nb6Yc1Hd5Jf3Gs0A")
    for placeholder in ("changeme", "xxxxxx", "<password>", "${DB_PASSWORD}", "your_password"):
        assert not v.not_placeholder(placeholder), placeholder
    assert v.not_placeholder("Tr0ub4dor&3x")
