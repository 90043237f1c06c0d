"""The flights features in Quix Streams, exactly-once: ``python quix_app.py BOOTSTRAP EVENTS
RECORDS TOTAL STATE_DIR``. Per-key state in Quix's RocksDB store (with its changelog topic),
records to one topic, stopped after TOTAL events."""

from __future__ import annotations

import sys
import uuid

from quixstreams import Application
from quixstreams.state import State
from step import Clock, Step


def main(bootstrap: str, events: str, records: str, total: int, state_dir: str) -> None:
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    source = app.topic(events, key_deserializer="bytes", value_deserializer="bytes")
    sink = app.topic(records, key_serializer="bytes", value_serializer="bytes")
    step, clock = Step(), Clock(total)

    def featurize(
        value: bytes, key: bytes, _timestamp: int, _headers: object, state: State
    ) -> list[bytes]:
        entity = state.get("entity", {})
        out = step(value, key, entity)
        state.set("entity", entity)
        if clock.tick():
            app.stop()
        return out

    sdf = app.dataframe(source)
    sdf = sdf.apply(featurize, stateful=True, expand=True, metadata=True)
    sdf.to_topic(sink)
    app.run()
    clock.report()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
