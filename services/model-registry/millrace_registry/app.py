"""The registry's HTTP API (OpenAPI at /docs). Mutating calls need ``Authorization: Bearer``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from millrace.health import metrics_response
from millrace.http import BodySizeLimit, install_error_contract
from millrace.model_events import ModelEventPublisher
from millrace_registry.console.sampler import Sampler
from millrace_registry.console.series import SeriesStore
from millrace_registry.deps import StoreDep
from millrace_registry.routes import aliases, console, versions
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import Conflict, NotFound, RegistryStore

#: The operator console: static files shipped with the package (uPlot included, no CDN).
CONSOLE_FILES = Path(__file__).parent / "console" / "static"


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.announce:
            app.state.publisher = ModelEventPublisher(settings.kafka, settings.model_events_topic)
        sampler = None
        if settings.metrics_targets:
            sampler = Sampler(
                settings.metrics_targets,
                app.state.series,
                settings.metrics_interval_s,
                settings.metrics_retention_hours * 3600,
            )
            sampler.start()
        yield
        if sampler is not None:
            sampler.stop()
            sampler.join(timeout=10)
        if app.state.publisher is not None:
            app.state.publisher.close()
            app.state.publisher = None

    app = FastAPI(title="Millrace model registry", version="1", lifespan=lifespan)
    app.state.settings = settings
    # Secrets are read now, so a registry without them refuses to start, naming the setting.
    settings.token()
    app.state.verifier = settings.verifier() if settings.verify_signatures else None
    app.state.store = RegistryStore(settings.data_dir, settings.registry_database_url)
    app.state.series = SeriesStore(settings.data_dir / "console.db")
    app.state.publisher = None
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_contract(app)
    app.add_exception_handler(NotFound, _status(404))
    app.add_exception_handler(Conflict, _status(409))
    app.include_router(versions.router)
    app.include_router(aliases.router)
    app.include_router(console.router)
    app.mount("/ui", StaticFiles(directory=CONSOLE_FILES, html=True), name="console")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return metrics_response()

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/health")
    def health(store: StoreDep) -> dict[str, Any]:
        return {"status": "ok", "models": len(store.list_models())}

    return app


def _status(code: int) -> Any:
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler
