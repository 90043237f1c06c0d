"""What the registry's handlers need, injected: the store, the settings, the announcer, and the
bearer-token check for mutating calls."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request

from millrace.model_events import ModelEventPublisher
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import AliasMove, RegistryStore

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RULE = "letters, digits, '.', '_', '-'; at most 64; starting with a letter or digit"


def get_store(request: Request) -> RegistryStore:
    store: RegistryStore = request.app.state.store
    return store


def get_settings(request: Request) -> RegistrySettings:
    settings: RegistrySettings = request.app.state.settings
    return settings


StoreDep = Annotated[RegistryStore, Depends(get_store)]
SettingsDep = Annotated[RegistrySettings, Depends(get_settings)]
ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description=f"model name: {NAME_RULE}")]
AliasName = Annotated[str, Path(pattern=NAME_PATTERN, description=f"alias name: {NAME_RULE}")]
Version = Annotated[int, Path(ge=1, le=2**53)]


def require_token(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(authorization[7:].encode(), settings.registry_token.encode()):
        raise HTTPException(403, "the token is not valid")


Authorized = [Depends(require_token)]


class Announcer:
    """Announces alias moves on the model-events topic (when the registry has a publisher)."""

    def __init__(self, publisher: ModelEventPublisher | None) -> None:
        self.publisher = publisher

    def __call__(self, move: AliasMove) -> AliasMove:
        if self.publisher is not None:
            self.publisher.announce(move.as_dict())
        return move


def get_announcer(request: Request) -> Announcer:
    return Announcer(request.app.state.publisher)


AnnounceDep = Annotated[Announcer, Depends(get_announcer)]
