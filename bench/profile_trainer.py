"""Where the trainer's time goes: the service loop over the flights year, profiled.

The same run as ``bench_trainer.py``'s (the service's default settings, a real registry in this
process, checkpoints to Kafka), once, with pyinstrument sampling the trainer's thread every
millisecond (C calls such as librdkafka's consume are frames of their own). Its time is
attributed to the parts of the loop by the innermost frame that names one of them (``PARTS``)
and printed as microseconds per learned sample, beside a bare consume of the same topics in the
same run. (py-spy, the sampler that reads a process from outside, cannot read this machine's
processes: it fails to find the Python version of any target.) docs/performance.md holds the
latest table; the command:

    cd bench && ../.venv-bench/bin/python profile_trainer.py [--months 12]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path
from typing import Any

from bench_trainer import MODULE, bare_consume, load_topics, run_trainer
from common import infrastructure, print_table
from pyinstrument import Profiler

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.health import BackgroundServer
from millrace.join import join_all
from millrace.registry_client import RegistryClient
from millrace_flights.events import flight_events, load_flights
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from millrace_trainer.service import learnable_samples
from millrace_trainer.stream import StreamLoop

#: Before the first record (outside the run's clock): the collector's freeze of start-up objects.
STARTUP = "start: the collector's freeze"
#: (part, frame markers): time belongs to the innermost frame whose "function (file)" holds one
#: of a part's markers.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("consume (librdkafka + wrapper)", ("Consumer.consume (<built-in>",)),
    ("decode (msgspec, both topics)", ("decode (<built-in>",)),
    ("join: add, pair, window", ("add_features (", "add_label (")),
    ("per-message loop (_add: calls, names, offsets)", ("_add (",)),
    ("windows ready (sort, batch)", ("ready (",)),
    ("learning (scores, learner, lineage)", ("learn_stream (",)),
    ("publish + promote (registry calls)", ("publish_if_due (", "_publish_on_time (")),
    ("checkpoint (snapshot, sign, commit)", ("checkpoint (",)),
    ("gauges, idle, liveness", ("_gauges (", "_note_idle (", "beat (", "check (")),
    (STARTUP, ("tuned (",)),
]
OTHER = "other (the loop's own body)"


def attribute(frame: Any, part: str, into: collections.Counter[str]) -> None:
    """Add each frame's own time to the innermost part it is in."""
    name = f"{frame.function} ({frame.file_path or ''})"
    part = next((p for p, marks in PARTS if any(m in name for m in marks)), part)
    children = frame.children
    into[part] += frame.time - sum(child.time for child in children)
    for child in children:
        attribute(child, part, into)


def show(frame: Any, depth: int, least_s: float = 0.05) -> None:
    """The profile's frames that took at least ``least_s``, indented by depth."""
    print(f"{'  ' * depth}{frame.time:7.2f} s  {frame.function} ({frame.file_path})")
    for child in frame.children:
        if child.time >= least_s:
            show(child, depth + 1, least_s)


def profiled_loop_run(sessions: list[Any]) -> None:
    """The trainer thread's loop, run under pyinstrument (this script's run only)."""
    run = StreamLoop.run

    def profiled(self: StreamLoop) -> None:
        with Profiler(interval=0.001) as profiler:
            run(self)
        sessions.append(profiler.last_session)

    StreamLoop.run = profiled  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--months", type=int, default=12, help="months of 2013 (January: baseline)")
    parser.add_argument("--tree", action="store_true", help="print the profile's frames too")
    args = parser.parse_args()
    end = day_start_ms(f"2013-{args.months + 1:02d}-01" if args.months < 12 else "2014-01-01")
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), end)
    result = backfill(Featurizer(load_feature_module(MODULE)), from_envelopes(events))
    cut = day_start_ms("2013-02-01")
    base = [s for s in join_all(result.features, result.labels) if s.ts < cut]
    with infrastructure() as (bootstrap, _redis), tempfile.TemporaryDirectory() as tmp:
        topics = load_topics(bootstrap, result, cut)
        expected, _records = learnable_samples(topics)
        registry = RegistrySettings(
            data_dir=Path(tmp), announce=False, kafka_bootstrap=bootstrap, metrics_targets={}
        )
        port = free_port()
        server = BackgroundServer(create_app(registry), "127.0.0.1", port).start()
        client = RegistryClient.from_settings(registry, signs=True, url=f"http://127.0.0.1:{port}")
        sessions: list[Any] = []
        profiled_loop_run(sessions)
        try:
            run = run_trainer(topics, client, base, expected)
        finally:
            client.close()
            server.stop()
        bare = bare_consume(topics)
    parts: collections.Counter[str] = collections.Counter()
    attribute(sessions[0].root_frame(), OTHER, parts)
    if args.tree:
        show(sessions[0].root_frame(), 0)
    # The run's clock starts at the first record and stops at the last sample learned: the
    # profile's time beyond it (the group join, the stop) was spent waiting in consume.
    elapsed = run["samples"] / run["rate"]
    consume = "consume (librdkafka + wrapper)"
    parts[consume] -= sum(parts.values()) - parts.pop(STARTUP, 0.0) - elapsed
    samples = run["samples"]
    rows = [
        (part, f"{1e6 * seconds / samples:.1f} µs", f"{100 * seconds / elapsed:.0f} %", "")
        for part, seconds in parts.most_common()
    ]
    rows.append(
        ("trainer loop, all (under the profiler)", f"{1e6 * elapsed / samples:.1f} µs", "100 %", "")
    )
    rows.append(("bare consume (same run, unprofiled)", f"{1e6 / bare:.1f} µs", "", "the limit"))
    print_table(
        f"Trainer loop per learned sample: {run['samples']:,} samples, "
        f"{elapsed:.1f} s of its thread profiled",
        rows,
        columns=("part", "per sample", "share", "note"),
    )


if __name__ == "__main__":
    main()
