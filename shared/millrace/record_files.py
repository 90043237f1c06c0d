"""Feature and label records in a Parquet file: what a backfill writes and what the trainer
reads its baseline from. Each record is kept as its canonical JSON bytes (lossless), with its
kind, subject id, entity key and event time as columns for querying."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from millrace.featurize import BackfillResult
from millrace.records import FeatureRecord, LabelRecord, decode_features, decode_label

_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("id", pa.string()),
        ("key", pa.string()),
        ("ts", pa.int64()),
        ("record", pa.binary()),
    ]
)


def write_parquet(result: BackfillResult, path: Path) -> None:
    """Feature and label records, each also as its canonical JSON bytes (lossless)."""
    records = result.features + result.labels
    table = pa.Table.from_pydict(
        {
            "kind": ["features"] * len(result.features) + ["label"] * len(result.labels),
            "id": [r.id for r in records],
            "key": [r.key for r in records],
            "ts": [r.ts for r in records],
            "record": result.feature_bytes + result.label_bytes,
        },
        schema=_SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_parquet(path: Path) -> tuple[list[FeatureRecord], list[LabelRecord]]:
    """(feature records, label records) from :func:`write_parquet`'s file."""
    table = pq.read_table(path, columns=["kind", "record"]).to_pydict()
    features: list[FeatureRecord] = []
    labels: list[LabelRecord] = []
    for kind, record in zip(table["kind"], table["record"], strict=True):
        if kind == "features":
            features.append(decode_features(record))
        else:
            labels.append(decode_label(record))
    return features, labels
