"""The backfill's sources: history, read in the order a live consumer would see it.

The run itself is :func:`millrace.featurize.backfill` (the live runner's loop body over a bounded
set of events, state in memory); its output goes to Parquet with
:func:`millrace.record_files.write_parquet`. Sources:

- a file: JSON lines (one envelope per line), or CSV / Parquet with the envelope's columns
  (``schema, id, type, key, ts, data`` with ``data`` as a JSON string), in file order;
- a Kafka topic, from its beginning up to the end offsets read at start, partition by partition
  (per-key order is offset order, which is all the features depend on).

Events arrive as raw bytes, so malformed ones are dead-lettered by the same rules as live.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer

from millrace.featurize import SourceEvent, source_event
from millrace.kafka import Brokers, consumer_config, read_range, watermarks

ENVELOPE_COLUMNS = ("schema", "id", "type", "key", "ts", "data")


def from_file(path: Path) -> Iterator[SourceEvent]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with path.open("rb") as lines:
            for offset, line in enumerate(lines):
                yield SourceEvent(line.rstrip(b"\r\n"), None, 0, offset, from_kafka=False)
        return
    if suffix == ".csv":
        import pandas as pd

        table = pa.Table.from_pandas(pd.read_csv(path, dtype=str, keep_default_na=False))
    elif suffix == ".parquet":
        table = pq.read_table(path)
    else:
        raise ValueError(f"unknown file type {path.suffix!r}: use .jsonl, .csv or .parquet")
    missing = set(ENVELOPE_COLUMNS) - set(table.column_names)
    if missing:
        raise ValueError(f"{path} lacks the envelope columns {sorted(missing)}")
    for offset, row in enumerate(table.select(list(ENVELOPE_COLUMNS)).to_pylist()):
        yield SourceEvent(_row_to_json(row), None, 0, offset, from_kafka=False)


def _row_to_json(row: dict[str, Any]) -> bytes:
    """A tabular row as the JSON envelope; a cell that does not decode stays a string, so the
    envelope's validation names the problem."""
    ts, data = row["ts"], row["data"]
    if isinstance(ts, str) and ts.lstrip("-").isdigit():
        ts = int(ts)
    if isinstance(data, str | bytes):
        with contextlib.suppress(orjson.JSONDecodeError):
            data = orjson.loads(data)
    return orjson.dumps({**row, "ts": ts, "data": data})


def topic_end_offsets(brokers: Brokers, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) offsets, read once."""
    probe = Consumer(consumer_config(brokers, "millrace-backfill-probe"))
    try:
        return watermarks(probe, topic)
    finally:
        probe.close()


def from_topic(
    brokers: Brokers, topic: str, ends: Mapping[int, tuple[int, int]] | None = None
) -> Iterator[SourceEvent]:
    """Every committed event of ``topic`` below the end offsets at start."""
    ends = ends if ends is not None else topic_end_offsets(brokers, topic)
    reader = Consumer(consumer_config(brokers, "millrace-backfill"))
    try:
        for partition, (low, high) in ends.items():
            for batch in read_range(reader, topic, partition, low, high):
                yield from map(source_event, batch)
    finally:
        reader.close()
