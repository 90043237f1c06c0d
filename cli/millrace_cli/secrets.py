"""The local stack's secrets: made once per run folder, never the public development values.

``make up`` writes ``<run dir>/secrets.env`` (mode 0600) on its first start: a random registry
token and an Ed25519 key pair. Each service gets only what it needs: the trainer the private
key, the registry and the predictor the public one, the featurizer none. Source the file
(``set -a; . .run/secrets.env``) to call the registry's mutating endpoints from a shell.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from millrace.signing import generate_keypair

TOKEN = "MILLRACE_REGISTRY_TOKEN"
SIGNING_KEY = "MILLRACE_SIGNING_KEY"
VERIFY_KEY = "MILLRACE_VERIFY_KEY"

#: Which secrets each service is given.
NEEDS = {
    "model-registry": (TOKEN, VERIFY_KEY),
    "trainer": (TOKEN, SIGNING_KEY, VERIFY_KEY),
    "predictor": (TOKEN, VERIFY_KEY),
    "featurizer": (),
}


def secrets_path(run_dir: Path) -> Path:
    return run_dir / "secrets.env"


def ensure_secrets(run_dir: Path) -> dict[str, str]:
    """The run folder's secrets, generated on the first call."""
    path = secrets_path(run_dir)
    if not path.exists():
        private, public = generate_keypair()
        values = {TOKEN: secrets.token_urlsafe(32), SIGNING_KEY: private, VERIFY_KEY: public}
        run_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.writelines(f"{name}={value}\n" for name, value in values.items())
    return read_secrets(run_dir) or {}


def read_secrets(run_dir: Path) -> dict[str, str] | None:
    """The run folder's secrets, or None when ``make up`` has not made them."""
    path = secrets_path(run_dir)
    if not path.exists():
        return None
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def service_secrets(run_dir: Path, service: str) -> dict[str, str]:
    every = ensure_secrets(run_dir)
    return {name: every[name] for name in NEEDS.get(service, ())}
