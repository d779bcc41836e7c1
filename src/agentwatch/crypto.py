"""Key material: tenant key hashing, AES-256-GCM for provider secrets (under a rotatable
keyring), password hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from agentwatch.settings import Settings

TENANT_KEY_PREFIX = "aw-"
MIN_TENANT_KEY_LENGTH = 20
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID_BYTES = 4
# v1: version + nonce + ciphertext, AAD = version. v2 adds the id of the key it is encrypted
# under (AAD = version + id, so the id cannot be swapped) so ENCRYPTION_KEY can be rotated.
_V1 = b"\x01"
_V2 = b"\x02"
_passwords = PasswordHasher()


class DecryptionError(ValueError):
    """A stored secret does not decrypt with any key of the keyring."""


def key_id(key: bytes) -> str:
    """A short public name for an encryption key (one-way), stored in front of each secret."""
    return hashlib.sha256(b"agentwatch-key-id" + key).hexdigest()[: 2 * _KEY_ID_BYTES]


@dataclass(frozen=True, slots=True)
class Keyring:
    """ENCRYPTION_KEY (`current`) and the earlier keys secrets may still be encrypted under."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        return cls(settings.encryption_key, settings.previous_encryption_keys)

    @property
    def all_keys(self) -> tuple[bytes, ...]:
        return (self.current, *self.previous)


# A keyring, or one key on its own (a keyring without previous keys).
Keys: TypeAlias = Keyring | bytes


def _keyring(keys: Keys) -> Keyring:
    return keys if isinstance(keys, Keyring) else Keyring(keys)


def new_tenant_key() -> str:
    return TENANT_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_tenant_key(key: str) -> str:
    # Keys are long random tokens, so one fast hash suffices and keeps auth cheap.
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:8]


def encrypt_secret(plaintext: str, keys: Keys) -> bytes:
    """Encrypt under the current key, in the v2 format that names it."""
    key = _keyring(keys).current
    header = _V2 + _raw_id(key)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), header)


def decrypt_secret(blob: bytes, keys: Keys) -> str:
    """Decrypt with the key the blob names (v1 blobs name none: every key is tried)."""
    keyring = _keyring(keys)
    header = _header(blob)
    if header == _V1:
        candidates = keyring.all_keys
    else:
        candidates = tuple(k for k in keyring.all_keys if _raw_id(k) == header[1:])
        if not candidates:
            raise DecryptionError(
                f"secret is encrypted under key id {header[1:].hex()}, which is neither "
                "ENCRYPTION_KEY nor in ENCRYPTION_KEY_PREVIOUS"
            )
    nonce = blob[len(header) : len(header) + _NONCE_BYTES]
    ciphertext = blob[len(header) + _NONCE_BYTES :]
    for key in candidates:
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, header).decode()
        except InvalidTag:
            continue
    raise DecryptionError("secret does not decrypt with ENCRYPTION_KEY or ENCRYPTION_KEY_PREVIOUS")


def needs_rotation(blob: bytes, keys: Keys) -> bool:
    """Whether the blob is not (yet) encrypted under the current key in the current format."""
    return not blob.startswith(_V2 + _raw_id(_keyring(keys).current))


def _header(blob: bytes) -> bytes:
    if blob.startswith(_V1):
        header = _V1
    elif blob.startswith(_V2):
        header = blob[: 1 + _KEY_ID_BYTES]
    else:
        raise DecryptionError("unknown secret format")
    if len(blob) < len(header) + _NONCE_BYTES + _TAG_BYTES:
        raise DecryptionError("secret is truncated")
    return header


def _raw_id(key: bytes) -> bytes:
    return bytes.fromhex(key_id(key))


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _passwords.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
