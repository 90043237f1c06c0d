from __future__ import annotations

from pydantic import Field

from millrace.settings import HttpSettings


class FeaturizerSettings(HttpSettings):
    port: int = 8702
    group: str = "millrace-featurizer"
    # Events per Kafka transaction at most (a batch also ends after 0.2 s): larger batches
    # spread the commit's two round trips over more events (`bench/bench_featurizer.py
    # --batch-size 1000` vs the default: 5000 gave about 1.3x the throughput).
    batch_size: int = Field(default=5000, ge=1)
    partitions: int = 3
    # A stable, unique id per replica (e.g. its hostname in compose): a restarted replica then
    # fences the transaction its dead predecessor left open instead of waiting for it to expire.
    instance_id: str | None = None
    # How soon the group notices a dead replica and hands its partitions to another.
    session_timeout_ms: int = 10_000
