"""The registry's HTTP API (OpenAPI at /docs). Mutating calls need ``Authorization: Bearer``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from millrace.http import BodySizeLimit, install_error_contract
from millrace.model_events import ModelEventPublisher
from millrace_registry.deps import StoreDep
from millrace_registry.routes import aliases, versions
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import Conflict, NotFound, RegistryStore


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.announce:
            app.state.publisher = ModelEventPublisher(settings.kafka, settings.model_events_topic)
        yield
        if app.state.publisher is not None:
            app.state.publisher.close()
            app.state.publisher = None

    app = FastAPI(title="Millrace model registry", version="1", lifespan=lifespan)
    app.state.settings = settings
    # Secrets are read now, so a registry without them refuses to start, naming the setting.
    settings.token()
    app.state.verifier = settings.verifier() if settings.verify_signatures else None
    app.state.store = RegistryStore(settings.data_dir)
    app.state.publisher = None
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_contract(app)
    app.add_exception_handler(NotFound, _status(404))
    app.add_exception_handler(Conflict, _status(409))
    app.include_router(versions.router)
    app.include_router(aliases.router)

    @app.get("/health")
    def health(store: StoreDep) -> dict[str, Any]:
        return {"status": "ok", "models": len(store.list_models())}

    return app


def _status(code: int) -> Any:
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler
