"""Ed25519 signatures for model artifacts (the ``cryptography`` package).

Only the trainer holds the private key (``MILLRACE_SIGNING_KEY``); the registry and the
predictors hold the public one (``MILLRACE_VERIFY_KEY``), so neither can sign a model, and a
predictor that is compromised cannot make the others load anything. Keys are written as base64 of
their 32 raw bytes (PEM is read too).

>>> private, public = generate_keypair()
>>> signature = SigningKey.from_text(private).sign(b"model bytes")
>>> VerifyKey.from_text(public).verify(b"model bytes", signature)
>>> VerifyKey.from_text(public).verify(b"other bytes", signature)
Traceback (most recent call last):
...
millrace.signing.BadSignature: artifact signature is invalid
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from millrace.errors import MillraceError

#: Hex characters of a signature (64 bytes).
SIGNATURE_HEX_CHARS = 128
_RAW = serialization.Encoding.Raw


class BadSignature(MillraceError, ValueError):
    pass


class InvalidKey(MillraceError, ValueError):
    """A key setting that does not hold a key of the right kind."""


class SigningKey:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> SigningKey:
        if "BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise InvalidKey("the signing key is not an Ed25519 private key")
            return cls(key)
        return cls(Ed25519PrivateKey.from_private_bytes(_raw(text, "signing key")))

    def sign(self, data: bytes) -> str:
        signature: bytes = self._key.sign(data)
        return signature.hex()

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self._key.public_key())

    def text(self) -> str:
        raw = self._key.private_bytes(_RAW, serialization.PrivateFormat.Raw, _no_encryption())
        return base64.b64encode(raw).decode()


class VerifyKey:
    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> VerifyKey:
        if "BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise InvalidKey("the verify key is not an Ed25519 public key")
            return cls(key)
        return cls(Ed25519PublicKey.from_public_bytes(_raw(text, "verify key")))

    def verify(self, data: bytes, signature: str) -> None:
        """Raise :class:`BadSignature` unless ``signature`` (hex) signs ``data``."""
        try:
            self._key.verify(bytes.fromhex(signature), data)
        except (InvalidSignature, ValueError):
            raise BadSignature("artifact signature is invalid") from None

    def text(self) -> str:
        return base64.b64encode(
            self._key.public_bytes(_RAW, serialization.PublicFormat.Raw)
        ).decode()


def generate_keypair() -> tuple[str, str]:
    """(private, public) as base64 text, for settings files."""
    key = SigningKey(Ed25519PrivateKey.generate())
    return key.text(), key.verify_key().text()


def development_keypair() -> tuple[str, str]:
    """A fixed pair from a public seed: only for ``MILLRACE_DEV_MODE`` (anyone can sign with it)."""
    seed = hashlib.sha256(b"millrace development signing key").digest()
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(seed))
    return key.text(), key.verify_key().text()


def _raw(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise InvalidKey(f"the {what} is neither PEM nor base64") from None
    if len(raw) != 32:
        raise InvalidKey(f"the {what} must be 32 bytes (base64), not {len(raw)}")
    return raw


def _no_encryption() -> serialization.KeySerializationEncryption:
    return serialization.NoEncryption()
