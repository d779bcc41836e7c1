"""Key material: tenant key hashing, AES-256-GCM for provider secrets, password hashes."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TENANT_KEY_PREFIX = "aw-"
MIN_TENANT_KEY_LENGTH = 20
_NONCE_BYTES = 12
_VERSION = b"\x01"
_passwords = PasswordHasher()


class DecryptionError(ValueError):
    """A stored secret does not decrypt with the current ENCRYPTION_KEY."""


def new_tenant_key() -> str:
    return TENANT_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_tenant_key(key: str) -> str:
    # Keys are long random tokens, so one fast hash suffices and keeps auth cheap.
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:8]


def encrypt_secret(plaintext: str, key: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), _VERSION)


def decrypt_secret(blob: bytes, key: bytes) -> str:
    if not blob.startswith(_VERSION):
        raise DecryptionError("unknown secret format")
    nonce, ciphertext = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, _VERSION).decode()
    except Exception as exc:
        raise DecryptionError("secret does not decrypt with ENCRYPTION_KEY") from exc


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _passwords.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
