from __future__ import annotations

from millrace.settings import HttpSettings


class FeaturizerSettings(HttpSettings):
    port: int = 8702
    group: str = "millrace-featurizer"
    batch_size: int = 1000
    partitions: int = 3
