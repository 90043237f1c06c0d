"""Model artifacts: canonical JSON bytes, a sha256, and an Ed25519 signature.

An artifact is ``{"format": "millrace.model/v1", "learner": <learner.state()>}`` encoded with
sorted keys, so the same model state is the same bytes. Nothing here unpickles anything unless
told to: bytes are checked against their sha256 and signature (:func:`verify`) before
:func:`load_model` sees them, and a pickle-based learner loads only with ``allow_pickle``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from millrace.errors import MillraceError
from millrace.learners.base import Classifier, learner_from_state
from millrace.signing import BadSignature, VerifyKey

FORMAT_V1 = "millrace.model/v1"


class ArtifactRejected(MillraceError, ValueError):
    pass


def dump_model(learner: Classifier) -> bytes:
    return orjson.dumps(
        {"format": FORMAT_V1, "learner": learner.state()}, option=orjson.OPT_SORT_KEYS
    )


def load_model(data: bytes, allow_pickle: bool = False) -> Classifier:
    """Rebuild a model from artifact bytes. ``allow_pickle=True`` only for bytes whose sha256
    and signature were verified (:meth:`RegistryClient.download` does) and by a process that
    trusts the signer to run code in it (a pickle-based learner, River, is code)."""
    try:
        decoded: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ArtifactRejected(f"artifact is not JSON: {exc}") from None
    if not isinstance(decoded, dict) or decoded.get("format") != FORMAT_V1:
        raise ArtifactRejected("artifact format is not millrace.model/v1")
    try:
        return learner_from_state(decoded["learner"], allow_pickle=allow_pickle)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactRejected(f"artifact state is invalid: {exc}") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(data: bytes, sha256: str, signature: str, key: VerifyKey) -> None:
    """Raise :class:`ArtifactRejected` unless both the digest and the signature match."""
    if not hmac.compare_digest(sha256_hex(data), sha256):
        raise ArtifactRejected("artifact sha256 does not match the registry's record")
    try:
        key.verify(data, signature)
    except BadSignature as exc:
        raise ArtifactRejected(str(exc)) from None
