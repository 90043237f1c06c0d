"""The flights features in Bytewax: ``python bytewax_app.py BOOTSTRAP EVENTS RECORDS TOTAL``.
``stateful_map`` keyed by entity (state in memory, no recovery configured: at-least-once), the
topic read from its beginning to its end, records to one topic."""

from __future__ import annotations

import sys
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING
from step import Clock, Step


def main(bootstrap: str, events: str, records: str, total: int) -> None:
    step, clock = Step(), Clock(total)

    def featurize(
        state: dict[str, float] | None, message: Any
    ) -> tuple[dict[str, float], list[bytes]]:
        entity = state if state is not None else {}
        out = step(message.value, message.key, entity)
        clock.tick()
        return entity, out

    flow = Dataflow("millrace-flights")
    messages = op.input(
        "events",
        flow,
        KafkaSource([bootstrap], [events], tail=False, starting_offset=OFFSET_BEGINNING),
    )
    keyed = op.key_on("entity", messages, lambda m: m.key.decode())
    featurized = op.stateful_map("features", keyed, featurize)
    out = op.flat_map(
        "records", featurized, lambda kv: [KafkaSinkMessage(kv[0].encode(), r) for r in kv[1]]
    )
    op.output("records-out", out, KafkaSink([bootstrap], records))
    run_main(flow)
    clock.report()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
