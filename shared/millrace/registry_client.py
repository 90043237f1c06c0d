"""A small client for the registry's HTTP API, used by the trainer and the predictor.

Connection failures and server errors are retried (exponential back-off, tenacity). Retrying
is safe for every call: a publish carries an idempotency key, so a retried POST returns the
version the lost answer named, and a compare-and-set whose lost answer had applied is recognised
in the alias history instead of turning into a spurious 409. Every artifact it hands out has had
its sha256 and signature checked.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import TypeAdapter, ValidationError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from millrace.artifacts import ArtifactRejected, verify
from millrace.errors import MillraceError
from millrace.registry_models import (
    Alias,
    AliasList,
    AliasMove,
    ModelList,
    ModelVersion,
    MoveHistory,
    VersionPage,
)
from millrace.settings import CommonSettings
from millrace.signing import InvalidKey, SigningKey, VerifyKey
from millrace.waiting import wait_until

Answer = TypeVar("Answer")


class RegistryError(MillraceError, RuntimeError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"registry answered {status}: {detail}")
        self.status = status
        self.detail = detail

    def __reduce__(self) -> tuple[type[RegistryError], tuple[int, str]]:
        return type(self), (self.status, self.detail)  # it pickles (a child process's error)


# Built once: a TypeAdapter compiles its validator.
ANSWERS: dict[type, TypeAdapter[Any]] = {
    shape: TypeAdapter(shape)
    for shape in (Alias, AliasList, AliasMove, ModelList, ModelVersion, MoveHistory, VersionPage)
}


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
        self._made_with = {"base_url": base_url, "token": token, "timeout": timeout}
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

    def portable(self) -> dict[str, Any]:
        """What another process needs to make the same client (:meth:`from_portable`): plain
        JSON-able values, the keys as text. It holds the token and the signing key: it goes
        only to this process's own children."""
        return {
            **self._made_with,
            "signer": self.signer.text() if self.signer is not None else None,
            "verifier": self.verifier.text() if self.verifier is not None else None,
            "retries": self.retries,
        }

    @classmethod
    def from_portable(cls, made_with: dict[str, Any]) -> RegistryClient:
        signer, verifier = made_with["signer"], made_with["verifier"]
        return cls(
            made_with["base_url"],
            made_with["token"],
            SigningKey.from_text(signer) if signer is not None else None,
            VerifyKey.from_text(verifier) if verifier is not None else None,
            timeout=made_with["timeout"],
            retries=made_with["retries"],
        )

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

    def _answer(self, shape: type[Answer], method: str, path: str, **kwargs: Any) -> Answer:
        """The call's JSON answer, validated as ``shape`` (one of :mod:`millrace.registry_models`):
        a registry that answers in another shape is an error here, not a KeyError later."""
        return self._validated(shape, self._request(method, path, **kwargs), method, path)

    @staticmethod
    def _validated(shape: type[Answer], response: httpx.Response, method: str, path: str) -> Answer:
        try:
            answer: Answer = ANSWERS[shape].validate_json(response.content)
        except ValidationError as exc:
            raise RegistryError(
                response.status_code, f"{method} {path}: not a {shape.__name__}: {exc}"
            ) from None
        return answer

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

    def publish(self, model: str, artifact: bytes, metadata: dict[str, Any]) -> ModelVersion:
        return self.publish_keyed(model, artifact, metadata, uuid.uuid4().hex)[0]

    def publish_keyed(
        self,
        model: str,
        artifact: bytes,
        metadata: dict[str, Any],
        key: str,
        promote: str | None = None,
        reason: str = "",
    ) -> tuple[ModelVersion, bool]:
        """Publish under an idempotency key of the caller's: (the version, True if this call
        made it; False: the key's version, made by an earlier call). With ``promote``, that
        alias moves to a version this call made, in the same call (``reason`` in its history)."""
        path = f"/models/{model}/versions"
        form = {"signature": self.signature(artifact), "metadata": orjson.dumps(metadata).decode()}
        if promote is not None:
            form |= {"promote": promote, "promote_reason": reason}
        response = self._request(
            "POST",
            path,
            files={"artifact": ("model.json", artifact, "application/octet-stream")},
            data=form,
            headers={"Idempotency-Key": key},
        )
        return self._validated(ModelVersion, response, "POST", path), response.status_code == 201

    def list_models(self) -> list[str]:
        return self._answer(ModelList, "GET", "/models")["models"]

    def list_aliases(self, model: str) -> list[Alias]:
        """Every alias of ``model`` and the version it names."""
        return self._answer(AliasList, "GET", f"/models/{model}/aliases")["items"]

    def promote(
        self, model: str, version: int, alias: str = "production", reason: str = ""
    ) -> AliasMove:
        """Point ``alias`` at ``version`` from whatever it names now."""
        body = {"alias": alias, "reason": reason}
        return self._answer(
            AliasMove, "POST", f"/models/{model}/versions/{version}/promote", json=body
        )

    def console_targets(self) -> dict[str, Any]:
        """The services the registry samples, and what each said last (a predictor's refusals)."""
        result: dict[str, Any] = self._request("GET", "/console/targets").json()
        return result

    def list_versions(
        self, model: str, limit: int = 100, offset: int = 0, tag: tuple[str, str] | None = None
    ) -> VersionPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if tag is not None:
            params["tag"] = f"{tag[0]}:{tag[1]}"
        return self._answer(VersionPage, "GET", f"/models/{model}/versions", params=params)

    def get_version(self, model: str, version: int) -> ModelVersion:
        return self._answer(ModelVersion, "GET", f"/models/{model}/versions/{version}")

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
        return None if state is None else state["version"]

    def alias_state(self, model: str, alias: str = "production") -> Alias | None:
        """The alias (its version and sequence number), or None while it is unset."""
        try:
            return self._answer(Alias, "GET", f"/models/{model}/aliases/{alias}")
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise

    def history(self, model: str, alias: str = "production", limit: int = 100) -> list[AliasMove]:
        path = f"/models/{model}/aliases/{alias}/history"
        return self._answer(MoveHistory, "GET", path, params={"limit": limit})["items"]

    def move_alias(
        self, model: str, alias: str, version: int, expected: int | None, reason: str = ""
    ) -> AliasMove:
        body = {"version": version, "expected_version": expected, "reason": reason}
        try:
            return self._answer(AliasMove, "PUT", f"/models/{model}/aliases/{alias}", json=body)
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
            return newest[0]

    def rollback(
        self, model: str, alias: str = "production", to_version: int | None = None, reason: str = ""
    ) -> AliasMove:
        body = {"alias": alias, "to_version": to_version, "reason": reason}
        return self._answer(AliasMove, "POST", f"/models/{model}/rollback", json=body)
