"""A small client for the registry's HTTP API, used by the trainer and the predictor.

Connection failures and server errors are retried (exponential back-off, tenacity). Retrying
is safe for every call: a publish carries an idempotency key, so a retried POST returns the
version the lost answer named, and a compare-and-set whose lost answer had applied is recognised
in the alias history instead of turning into a spurious 409. Every artifact it hands out has had
its sha256 and signature checked.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from millrace.artifacts import ArtifactRejected, verify
from millrace.errors import MillraceError
from millrace.settings import CommonSettings
from millrace.signing import InvalidKey, SigningKey, VerifyKey
from millrace.waiting import wait_until


class RegistryError(MillraceError, RuntimeError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"registry answered {status}: {detail}")
        self.status = status
        self.detail = detail


class RegistryClient:
    """``token``: the bearer token sent with every call; ``signer``: the private key that signs
    what :meth:`publish` uploads (the trainer's); ``verifier``: the public key
    :meth:`download` checks artifacts with."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        signer: SigningKey | None = None,
        verifier: VerifyKey | None = None,
        timeout: float = 10.0,
        retries: int = 5,
    ) -> None:
        self.signer = signer
        self.verifier = verifier if verifier is not None or signer is None else signer.verify_key()
        self.retries = retries
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )

    @classmethod
    def from_settings(
        cls, settings: CommonSettings, signs: bool = False, url: str | None = None
    ) -> RegistryClient:
        """A client with the settings' write token and verify key (and, with ``signs``, the
        signing key: the trainer's); raises :class:`MissingSecret` naming what is unset."""
        signer = settings.signer() if signs else None
        verifier = settings.verifier()
        if signer is not None and signer.verify_key().text() != verifier.text():
            raise InvalidKey(
                "MILLRACE_VERIFY_KEY is not the public half of MILLRACE_SIGNING_KEY: "
                "what this process signs would fail its own verification"
            )
        return cls(url or settings.registry_url, settings.token(), signer, verifier)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; connection failures and 5xx answers are retried with back-off, and the
        last one stands."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception_type(httpx.TransportError)
            | retry_if_result(lambda response: response.status_code >= 500),
            # Out of tries: the last answer (or the last connection error) stands.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        response: httpx.Response = retrying(self._http.request, method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail"))
            except ValueError:
                detail = response.text[:200]
            raise RegistryError(response.status_code, detail)
        return response

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until(
            lambda: self._http.get("/health").raise_for_status(),
            timeout,
            f"the registry at {self._http.base_url}",
            0.3,
            errors=(httpx.HTTPError,),
            announce=f"waiting for the registry at {self._http.base_url}"
            " (set by MILLRACE_REGISTRY_URL)",
        )

    def signature(self, artifact: bytes) -> str:
        if self.signer is None:
            raise ArtifactRejected("this client has no signing key: only the trainer publishes")
        return self.signer.sign(artifact)

    def publish(self, model: str, artifact: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
        response = self._request(
            "POST",
            f"/models/{model}/versions",
            files={"artifact": ("model.json", artifact, "application/octet-stream")},
            data={
                "signature": self.signature(artifact),
                "metadata": orjson.dumps(metadata).decode(),
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        result: dict[str, Any] = response.json()
        return result

    def list_models(self) -> list[str]:
        models: list[str] = self._request("GET", "/models").json()["models"]
        return models

    def list_aliases(self, model: str) -> list[dict[str, Any]]:
        """Every alias of ``model``: ``{"alias", "version", "seq", "updated_at"}``."""
        aliases: list[dict[str, Any]] = self._request("GET", f"/models/{model}/aliases").json()[
            "items"
        ]
        return aliases

    def promote(
        self, model: str, version: int, alias: str = "production", reason: str = ""
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version`` from whatever it names now."""
        body = {"alias": alias, "reason": reason}
        result: dict[str, Any] = self._request(
            "POST", f"/models/{model}/versions/{version}/promote", json=body
        ).json()
        return result

    def console_targets(self) -> dict[str, Any]:
        """The services the registry samples, and what each said last (a predictor's refusals)."""
        result: dict[str, Any] = self._request("GET", "/console/targets").json()
        return result

    def list_versions(
        self, model: str, limit: int = 100, offset: int = 0, tag: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if tag is not None:
            params["tag"] = f"{tag[0]}:{tag[1]}"
        result: dict[str, Any] = self._request(
            "GET", f"/models/{model}/versions", params=params
        ).json()
        return result

    def get_version(self, model: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/models/{model}/versions/{version}").json()
        return result

    def download(self, model: str, version: int) -> bytes:
        """The artifact's bytes, verified against the registry's sha256 and the signature."""
        response = self._request("GET", f"/models/{model}/versions/{version}/artifact")
        sha = response.headers.get("X-Millrace-Sha256", "")
        signature = response.headers.get("X-Millrace-Signature", "")
        if not sha or not signature:
            raise ArtifactRejected("registry sent no digest or signature")
        if self.verifier is None:
            raise ArtifactRejected("this client has no verify key: it cannot check artifacts")
        verify(response.content, sha, signature, self.verifier)
        return response.content

    def get_alias(self, model: str, alias: str = "production") -> int | None:
        state = self.alias_state(model, alias)
        return None if state is None else int(state["version"])

    def alias_state(self, model: str, alias: str = "production") -> dict[str, Any] | None:
        """``{"version", "seq", ...}`` of the alias, or None while it is unset."""
        try:
            result: dict[str, Any] = self._request("GET", f"/models/{model}/aliases/{alias}").json()
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def history(self, model: str, alias: str = "production", limit: int = 100) -> list[Any]:
        result: list[Any] = self._request(
            "GET", f"/models/{model}/aliases/{alias}/history", params={"limit": limit}
        ).json()["items"]
        return result

    def move_alias(
        self, model: str, alias: str, version: int, expected: int | None, reason: str = ""
    ) -> dict[str, Any]:
        body = {"version": version, "expected_version": expected, "reason": reason}
        try:
            result: dict[str, Any] = self._request(
                "PUT", f"/models/{model}/aliases/{alias}", json=body
            ).json()
        except RegistryError as exc:
            # A retried PUT after a lost answer that had applied finds the alias moved already:
            # if the newest move is exactly this one, it is ours.
            if exc.status != 409:
                raise
            newest = self.history(model, alias, limit=1)
            move = (version, expected, reason)
            if not newest or (
                (newest[0]["to_version"], newest[0]["from_version"], newest[0]["reason"]) != move
            ):
                raise
            return dict(newest[0])
        return result

    def rollback(
        self, model: str, alias: str = "production", to_version: int | None = None, reason: str = ""
    ) -> dict[str, Any]:
        body = {"alias": alias, "to_version": to_version, "reason": reason}
        result: dict[str, Any] = self._request(
            "POST", f"/models/{model}/rollback", json=body
        ).json()
        return result
