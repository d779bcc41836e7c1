"""Provider secrets name the key they are encrypted under, so ENCRYPTION_KEY can be rotated."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text

from agentwatch.crypto import (
    DecryptionError,
    Keyring,
    decrypt_secret,
    encrypt_secret,
    key_id,
    needs_rotation,
)
from agentwatch.db.engine import create_engine
from agentwatch.settings import load_settings, normalise_database_url, parse_encryption_key
from tests.conftest import BACKENDS
from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, database, new_key

OLD_KEY, NEW_KEY, OTHER_KEY = (secrets.token_bytes(32) for _ in range(3))
SECRET = "sk-upstream-do-not-leak"
HEADER = 1 + 4  # version byte + key id
NONCE = 12


def v1_blob(plaintext: str, key: bytes) -> bytes:
    """A secret as releases before key ids stored it."""
    nonce = secrets.token_bytes(NONCE)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), b"\x01")


def flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


def test_key_ids_are_short_stable_and_distinct() -> None:
    assert key_id(OLD_KEY) == key_id(bytes(OLD_KEY))
    assert len(key_id(OLD_KEY)) == 8 and int(key_id(OLD_KEY), 16) >= 0
    assert key_id(OLD_KEY) != key_id(NEW_KEY)
    assert key_id(OLD_KEY) not in OLD_KEY.hex()


def test_blobs_name_the_current_key_and_use_a_fresh_nonce() -> None:
    keyring = Keyring(NEW_KEY, (OLD_KEY,))
    first, second = encrypt_secret(SECRET, keyring), encrypt_secret(SECRET, keyring)
    assert first[:HEADER] == b"\x02" + bytes.fromhex(key_id(NEW_KEY)) == second[:HEADER]
    assert len(first) == HEADER + NONCE + len(SECRET) + 16
    assert first[HEADER : HEADER + NONCE] != second[HEADER : HEADER + NONCE]
    assert first != second and SECRET.encode() not in first
    assert decrypt_secret(first, keyring) == decrypt_secret(second, NEW_KEY) == SECRET
    assert not needs_rotation(first, keyring)


@pytest.mark.parametrize(
    "index",
    [0, 1, 4, HEADER, HEADER + NONCE - 1, HEADER + NONCE, -1],
    ids=["version", "id-first", "id-last", "nonce-first", "nonce-last", "ciphertext", "tag"],
)
def test_tampering_is_refused(index: int) -> None:
    blob = encrypt_secret(SECRET, OLD_KEY)
    with pytest.raises(DecryptionError):
        decrypt_secret(flip(blob, index % len(blob)), Keyring(NEW_KEY, (OLD_KEY,)))


def test_the_key_id_cannot_be_swapped_or_stripped() -> None:
    keyring = Keyring(NEW_KEY, (OLD_KEY,))
    blob = encrypt_secret(SECRET, OLD_KEY)
    relabelled = b"\x02" + bytes.fromhex(key_id(NEW_KEY)) + blob[HEADER:]
    # As v1 the blob would be tried with every key, the right one included: only the
    # authenticated header (version + id) refuses it.
    downgraded = b"\x01" + blob[HEADER:]
    for forged in (relabelled, downgraded):
        with pytest.raises(DecryptionError):
            decrypt_secret(forged, keyring)


def test_previous_keys_decrypt_and_need_rotation() -> None:
    blob = encrypt_secret(SECRET, OLD_KEY)
    assert decrypt_secret(blob, Keyring(NEW_KEY, (OTHER_KEY, OLD_KEY))) == SECRET
    assert needs_rotation(blob, Keyring(NEW_KEY, (OLD_KEY,)))
    assert not needs_rotation(blob, Keyring(OLD_KEY))


def test_v1_blobs_still_decrypt_with_current_or_previous_keys() -> None:
    blob = v1_blob(SECRET, OLD_KEY)
    assert decrypt_secret(blob, OLD_KEY) == SECRET
    assert decrypt_secret(blob, Keyring(NEW_KEY, (OLD_KEY,))) == SECRET
    assert needs_rotation(blob, OLD_KEY) and needs_rotation(blob, Keyring(NEW_KEY, (OLD_KEY,)))
    with pytest.raises(DecryptionError):
        decrypt_secret(blob, Keyring(NEW_KEY, (OTHER_KEY,)))
    with pytest.raises(DecryptionError):
        decrypt_secret(flip(blob, 1 + NONCE), OLD_KEY)


@pytest.mark.parametrize(
    "blob",
    [
        encrypt_secret(SECRET, OTHER_KEY),
        v1_blob(SECRET, OTHER_KEY),
        b"\x03" + encrypt_secret(SECRET, NEW_KEY)[1:],
        encrypt_secret(SECRET, NEW_KEY)[: HEADER + NONCE + 15],
        b"",
    ],
    ids=["unknown-id", "v1-unknown-key", "unknown-version", "truncated", "empty"],
)
def test_errors_never_show_key_material_or_plaintext(blob: bytes) -> None:
    keyring = Keyring(NEW_KEY, (OLD_KEY,))
    with pytest.raises(DecryptionError) as raised:
        decrypt_secret(blob, keyring)
    message = str(raised.value)
    assert SECRET not in message
    for key in (NEW_KEY, OLD_KEY, OTHER_KEY):
        assert key.hex() not in message and key.hex()[:8] not in message


def test_keyring_from_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "AGENTWATCH_DATA_DIR": str(tmp_path),
            "JWT_SECRET": "x" * 32,
            "ENCRYPTION_KEY": "new passphrase",
            "ENCRYPTION_KEY_PREVIOUS": "old passphrase, older passphrase",
        }
    )
    keyring = Keyring.from_settings(settings)
    assert keyring.current == parse_encryption_key("new passphrase")
    assert keyring.previous == tuple(
        parse_encryption_key(p) for p in ("old passphrase", "older passphrase")
    )


def test_rotate_encryption_help(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch", "keys", "rotate-encryption", "--help"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "AGENTWATCH_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: agentwatch keys rotate-encryption")
    assert "--dry-run" in done.stdout and "ENCRYPTION_KEY_PREVIOUS" in done.stdout
    assert not (tmp_path / "data").exists()


# End to end: `agentwatch serve` stores secrets under key A, then the documented rotation.

KEY_A, KEY_B = "rotation passphrase A", "rotation passphrase B"
UPSTREAM_KEYS = ["sk-rotation-first-0001", "sk-rotation-second-002"]


def stored_keys(url: str) -> list[tuple[int, bytes, bool]]:
    async def read() -> list[tuple[int, bytes, bool]]:
        engine = create_engine(normalise_database_url(url))
        try:
            async with engine.connect() as connection:
                result = await connection.execute(
                    text("SELECT id, encrypted_key, is_active FROM provider_keys ORDER BY id")
                )
                return [(int(i), bytes(blob), bool(active)) for i, blob, active in result]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def store_blob(url: str, key_row: int, blob: bytes) -> None:
    async def write() -> None:
        engine = create_engine(normalise_database_url(url))
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE provider_keys SET encrypted_key = :blob WHERE id = :id"),
                    {"blob": blob, "id": key_row},
                )
        finally:
            await engine.dispose()

    asyncio.run(write())


def secrets_env(current: str, *previous: str) -> dict[str, str]:
    env = {"JWT_SECRET": "rotation-test-jwt-secret", "ENCRYPTION_KEY": current}
    if previous:
        env["ENCRYPTION_KEY_PREVIOUS"] = ",".join(previous)
    return env


def call_upstream(gateway: Gateway, upstream: FakeOpenAI) -> str:
    """One chat call through the gateway; returns the Authorization the upstream received."""
    seen = len(upstream.headers)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
    reply = client.chat.completions.create(
        model="rotated", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from the fake upstream."
    assert len(upstream.headers) == seen + 1
    return upstream.headers[-1]["Authorization"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotating_the_encryption_key_end_to_end(
    tmp_path: Path, backend: str, fake_openai: FakeOpenAI
) -> None:
    tenant = new_key()
    config = f"""
providers:
  - name: local
    type: openai_compatible
    base_url: {fake_openai.base_url}
    api_keys: [{", ".join(UPSTREAM_KEYS)}]
models:
  - name: rotated
    retries: 0
    routes: [{{provider: local, model: gpt-4o-mini}}]
tenants:
  - {{name: t, api_keys: ["{tenant}"]}}
"""
    old, new = parse_encryption_key(KEY_A), parse_encryption_key(KEY_B)
    with database(backend, tmp_path) as url:
        gateway = Gateway(
            workdir=tmp_path,
            database_url=url,
            config=config,
            env=secrets_env(KEY_A),
            tenant_key=tenant,
        )
        gateway.start()
        gateway.stop()
        # One secret as a release before key ids left it, so both formats are rotated.
        (first_id, _, _), (_, second_blob, _) = stored_keys(url)
        store_blob(url, first_id, v1_blob(UPSTREAM_KEYS[0], old))
        assert second_blob[:HEADER] == b"\x02" + bytes.fromhex(key_id(old))
        under_a = stored_keys(url)

        # Step 1: deploy with the new key, the old one as previous; everything keeps working.
        gateway.env = secrets_env(KEY_B, KEY_A)
        gateway.start()
        try:
            assert call_upstream(gateway, fake_openai) == f"Bearer {UPSTREAM_KEYS[0]}"
        finally:
            gateway.stop()
        assert stored_keys(url) == under_a  # the config matched both secrets: no new rows

        # Without the old key nothing can be rotated, and nothing is changed.
        gateway.env = secrets_env(KEY_B)
        refused = gateway.cli("keys", "rotate-encryption")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(f"agentwatch: provider key {first_id} (provider 'local')")
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert not any(secret in refused.stderr for secret in UPSTREAM_KEYS)
        assert stored_keys(url) == under_a

        # Step 2: rotate (a dry run first changes nothing).
        gateway.env = secrets_env(KEY_B, KEY_A)
        dry = gateway.cli("keys", "rotate-encryption", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stderr == "would re-encrypt 2 of 2 provider keys\n"
        assert stored_keys(url) == under_a

        rotated = gateway.cli("keys", "rotate-encryption")
        assert rotated.returncode == 0, rotated.stderr
        assert rotated.stderr == "re-encrypted 2 of 2 provider keys\n" and rotated.stdout == ""
        under_b = stored_keys(url)
        assert [(i, active) for i, _, active in under_b] == [(i, a) for i, _, a in under_a]
        for (_, blob, _), secret in zip(under_b, UPSTREAM_KEYS, strict=True):
            assert blob[:HEADER] == b"\x02" + bytes.fromhex(key_id(new))
            assert decrypt_secret(blob, new) == secret
            with pytest.raises(DecryptionError):
                decrypt_secret(blob, old)

        again = gateway.cli("keys", "rotate-encryption")
        assert again.returncode == 0 and again.stderr == "re-encrypted 0 of 2 provider keys\n"
        assert stored_keys(url) == under_b

        # Step 3: drop the old key; the gateway still reaches the upstream with the right key.
        gateway.env = secrets_env(KEY_B)
        gateway.start()
        try:
            assert call_upstream(gateway, fake_openai) == f"Bearer {UPSTREAM_KEYS[0]}"
        finally:
            gateway.stop()
        assert stored_keys(url) == under_b
