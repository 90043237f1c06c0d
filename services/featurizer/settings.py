from __future__ import annotations

from millrace.settings import HttpSettings


class FeaturizerSettings(HttpSettings):
    port: int = 8702
    group: str = "millrace-featurizer"
    batch_size: int = 1000
    partitions: int = 3
    # A stable, unique id per replica (e.g. its hostname in compose): a restarted replica then
    # fences the transaction its dead predecessor left open instead of waiting for it to expire.
    instance_id: str | None = None
    # How soon the group notices a dead replica and hands its partitions to another.
    session_timeout_ms: int = 10_000
