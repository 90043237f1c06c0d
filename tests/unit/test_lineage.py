"""A lineage names exactly the records it learned, and a rebuild refuses records that do not
make the batches it names (pure logic; the rebuild against Kafka and a registry is
tests/integration/test_version_rebuild.py)."""

from __future__ import annotations

import orjson
import pytest

from millrace.kafka import SourcePartition
from millrace.records import FeatureRecord, LabelRecord
from millrace_trainer.batching import Batch, Joined
from millrace_trainer.lineage import EMPTY_DIGEST, Lineage, chain_digest
from millrace_trainer.rebuild import NotRebuildable, _batches, _pair

F, L = SourcePartition("f/0"), SourcePartition("l/0")


def batch(start: int, ids: list[str], offsets: list[int]) -> Batch:
    joined = [
        Joined(i, start + n, {"x": 1.0}, 1.0, F, o, L, o + 100)
        for n, (i, o) in enumerate(zip(ids, offsets, strict=True))
    ]
    return Batch(start, start + 10, joined)


def test_a_lineage_survives_a_checkpoint_and_names_its_records_as_ranges() -> None:
    lineage = Lineage(parent=3)
    lineage.learned([batch(0, ["a", "b"], [5, 6]), batch(10, ["c"], [9])])
    restored = Lineage.from_state(orjson.loads(orjson.dumps(lineage.state())))
    restored.learned([batch(20, ["d"], [7])])
    learned = restored.describe()["learned"]
    assert learned["records"] == {"f/0": [[5, 7], [9, 9]], "l/0": [[105, 107], [109, 109]]}
    assert learned["batch_samples"] == [2, 1, 1] and learned["event_time"] == [0, 30]
    assert restored.describe()["input_offsets"] == {"f/0": [5, 9], "l/0": [105, 109]}
    assert Lineage(parent=None).describe()["learned"] is None  # a baseline names its source


def test_an_older_releases_checkpoint_restores_without_claiming_a_lineage() -> None:
    old = Lineage(parent=2).state()
    for key in ("records", "batch_samples", "digest", "event_time", "exact"):
        del old[key]
    old["batches"] = 4
    restored = Lineage.from_state(old)
    assert restored.batches == 4 and restored.describe()["learned"] is None


def test_a_rebuild_pairs_by_id_orders_by_time_and_checks_the_digest() -> None:
    features = [
        (F, 1, FeatureRecord(id="b", ts=20, key="k", features={"x": 1.0})),
        (F, 2, FeatureRecord(id="a", ts=10, key="k", features={"x": 2.0})),
    ]
    labels = [
        (L, 7, LabelRecord(id="a", ts=30, key="k", label=0.0)),
        (L, 8, LabelRecord(id="b", ts=31, key="k", label=1.0)),
    ]
    samples = _pair(features, labels)
    assert [(s.id, s.label) for s in samples] == [("a", 0.0), ("b", 1.0)]
    digest = chain_digest(chain_digest(EMPTY_DIGEST, samples[:1]), samples[1:])
    assert _batches(samples, [1, 1], digest) == [samples[:1], samples[1:]]
    with pytest.raises(NotRebuildable, match="digest differs"):
        _batches(samples, [2], digest)
    with pytest.raises(NotRebuildable, match="hold 3 samples"):
        _batches(samples, [2, 1], digest)
    with pytest.raises(NotRebuildable, match="has no label"):
        _pair(features, labels[:1])
