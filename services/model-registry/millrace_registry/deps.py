"""What the registry's handlers need, injected: the store, the settings, the announcer, and the
bearer-token check for mutating calls.

The dependencies are coroutines although none awaits: they do no I/O, and FastAPI runs a plain
function dependency on its thread pool, a thread hop per dependency per request (six for a
publish), which cost more than the handler's own work."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request
from prometheus_client import Counter

from millrace.http import problems
from millrace.model_events import ModelEventPublisher
from millrace.registry_models import AliasMove
from millrace.signing import VerifyKey
from millrace_registry.console.series import SeriesStore
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import RegistryStore

ALIAS_MOVES = Counter("millrace_registry_alias_moves_total", "Alias moves", ["kind"])
PUBLISHED = Counter("millrace_registry_versions_published_total", "Versions published")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RULE = "letters, digits, '.', '_', '-'; at most 64; starting with a letter or digit"


async def get_store(request: Request) -> RegistryStore:
    store: RegistryStore = request.app.state.store
    return store


async def get_series(request: Request) -> SeriesStore:
    series: SeriesStore = request.app.state.series
    return series


async def get_settings(request: Request) -> RegistrySettings:
    settings: RegistrySettings = request.app.state.settings
    return settings


async def get_verifier(request: Request) -> VerifyKey | None:
    verifier: VerifyKey | None = request.app.state.verifier
    return verifier


StoreDep = Annotated[RegistryStore, Depends(get_store)]
SeriesDep = Annotated[SeriesStore, Depends(get_series)]
VerifierDep = Annotated[VerifyKey | None, Depends(get_verifier)]
SettingsDep = Annotated[RegistrySettings, Depends(get_settings)]
ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description=f"model name: {NAME_RULE}")]
AliasName = Annotated[str, Path(pattern=NAME_PATTERN, description=f"alias name: {NAME_RULE}")]
Version = Annotated[int, Path(ge=1, le=2**53)]


def _check_bearer(authorization: str | None, *accepted: str | None) -> None:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    given = authorization[7:].encode()
    if not any(t is not None and hmac.compare_digest(given, t.encode()) for t in accepted):
        raise HTTPException(403, "the token is not valid")


async def require_token(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Mutating calls: the write token."""
    _check_bearer(authorization, settings.token())


async def require_reader(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Reads: open, unless a read token is set; then it or the write token."""
    read_token = settings.read_token()
    if read_token is not None:
        _check_bearer(authorization, read_token, settings.token())


Authorized = [Depends(require_token)]
Readable = [Depends(require_reader)]
#: The error answers of the mutating calls and of the reads (besides the routers' 404/413/422).
MUTATING = problems(400, 401, 403, 409)
READING = problems(401, 403)


class Announcer:
    """Announces alias moves on the model-events topic (when the registry has a publisher)."""

    def __init__(self, publisher: ModelEventPublisher | None) -> None:
        self.publisher = publisher

    def __call__(self, move: AliasMove) -> AliasMove:
        ALIAS_MOVES.labels(move["kind"]).inc()
        if self.publisher is not None:
            self.publisher.announce(move)
        return move


async def get_announcer(request: Request) -> Announcer:
    return Announcer(request.app.state.publisher)


AnnounceDep = Annotated[Announcer, Depends(get_announcer)]
