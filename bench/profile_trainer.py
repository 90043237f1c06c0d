"""Where the trainer's time goes: the service loop over the flights year, part by part.

The same run as ``bench_trainer.py``'s (the service's default settings, a registry process,
checkpoints to Kafka), twice, beside a bare consume of the same topics:

1. timed: each part of the poll loop (consume, the records' decode-and-join, the ready
   windows, learning, publishing, checkpoints) under a wall-clock timer of its own, exclusive
   of the parts it calls; the timers are entered once per poll or per batch, never per record,
   so they cost nothing measurable, and they count only from the first record to the last
   sample learned (the run's clock);
2. profiled: pyinstrument sampling the trainer's thread every millisecond, for the split of the
   per-record part into the Kafka client's accessors and the loop's own lines, msgspec's
   decoding and the join (its shares, applied to the timed run's figure: the profiler slows
   Python code more than C code, so its absolute times are not used).

(py-spy, which samples a process from outside, cannot read this machine's processes: it
fails to find the Python version of any target.) docs/performance.md holds the latest tables:

    cd bench && ../.venv-bench/bin/python profile_trainer.py [--months 12]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import time
from collections.abc import Callable
from typing import Any

from bench_trainer import MODULE, run_trainer
from common import infrastructure, print_table, registry_process
from kafka_peers import bare_consume, load_topics
from pyinstrument import Profiler

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.join import Sample, join_all
from millrace.registry_client import RegistryClient
from millrace_flights.events import flight_events, load_flights
from millrace_trainer.batching import WindowedJoin
from millrace_trainer.feed import JoinFeed
from millrace_trainer.service import learnable_samples
from millrace_trainer.settings import TrainerSettings
from millrace_trainer.stream import StreamLoop
from millrace_trainer.training import StreamTrainer

RECORDS = "records: decode + join + per-record loop"
#: The timed parts: (name, class, method).
TIMED = [
    ("consume (librdkafka + wrapper)", None, "consume"),
    (RECORDS, JoinFeed, "add"),
    ("windows ready (expiry, sort, batch)", WindowedJoin, "ready"),
    ("learning (scores, learner, lineage)", StreamTrainer, "learn_stream"),
    ("publish + promote (registry calls)", StreamTrainer, "publish_if_due"),
    ("checkpoint (snapshot, sign, commit)", StreamLoop, "checkpoint"),
]
#: Inside the per-record part, by the innermost frame whose "function (file)" holds a marker.
INSIDE = [
    ("decode (msgspec, both topics)", ("decode (<built-in>",)),
    ("join: add, pair, window", ("add_records (", "_window (")),
]
RECORD_LOOP = "the per-record loop itself (accessors, names, offsets)"


class Timers:
    """Exclusive wall-clock time per part: a part's time excludes the timed parts it calls."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.counting = False
        #: Stop counting once the outermost timed call returns.
        self.stop_at_exit = False
        self._stack: list[list[float]] = []  # [start, time of timed parts inside]

    def wrap(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([time.perf_counter(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                started, inside = self._stack.pop()
                elapsed = time.perf_counter() - started
                if self._stack:
                    self._stack[-1][1] += elapsed
                if self.counting:
                    self.seconds[part] += elapsed - inside
                if self.stop_at_exit and not self._stack:
                    self.counting = False

        return timed


class TimedConsumer:
    """The loop's consumer with its ``consume`` timed and its polls counted (a C type takes no
    new attributes)."""

    def __init__(self, consumer: Any, consume: Callable[..., Any], timers: Timers) -> None:
        self._consumer = consumer
        self._consume = consume
        self._timers = timers
        self.polls = self.messages = 0

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        messages = self._consume(*args, **kwargs)
        if self._timers.counting:
            self.polls += 1
            self.messages += len(messages)
        return messages

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class WorkerCpu:
    """The publishing worker's CPU time: the children's time this process reaped meanwhile
    (the loop's end stops the worker; the registry's process is reaped only after the runs)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> None:
        before = os.times()
        self._before = before.children_user + before.children_system

    def __exit__(self, *exc: object) -> None:
        after = os.times()
        self.seconds = after.children_user + after.children_system - self._before


def timed_run(
    topics: TrainerSettings, client: RegistryClient, base: list[Sample], expected: int
) -> tuple[collections.Counter[str], float, int, collections.Counter[str]]:
    """Run 1: the parts' seconds within the run's clock, that clock, the samples, and the
    polls, records, versions and the publishing worker's CPU time."""
    timers = Timers()
    polls: collections.Counter[str] = collections.Counter()
    publishing = WorkerCpu()
    originals = {(cls, name): getattr(cls, name) for _, cls, name in TIMED if cls is not None}
    for part, cls, name in TIMED:
        if cls is not None:
            setattr(cls, name, timers.wrap(part, originals[cls, name]))
    run, learn = StreamLoop.run, originals[StreamTrainer, "learn_stream"]

    def run_timed(self: StreamLoop) -> None:
        consumer = TimedConsumer(
            self.consumer, timers.wrap(TIMED[0][0], self.consumer.consume), timers
        )
        self.consumer = consumer
        try:
            run(self)
        finally:
            polls.update(polls=consumer.polls, messages=consumer.messages)

    def learn_counted(self: StreamTrainer, *args: Any, **kwargs: Any) -> None:
        learn(self, *args, **kwargs)
        if self.stream_scores.samples >= expected:  # the run's clock stops after this call
            timers.stop_at_exit = True

    add = JoinFeed.add

    def add_starting(self: JoinFeed, messages: list[Any], now: float = 0.0) -> int:
        if not self.last_offsets and messages:  # the run's clock starts with the first records
            timers.counting = True
        return add(self, messages, now)

    StreamLoop.run = run_timed  # type: ignore[method-assign]
    JoinFeed.add = add_starting  # type: ignore[method-assign]
    StreamTrainer.learn_stream = timers.wrap(TIMED[3][0], learn_counted)  # type: ignore[method-assign]
    try:
        with publishing:
            result = run_trainer(topics, client, base, expected)
    finally:
        StreamLoop.run = run  # type: ignore[method-assign]
        JoinFeed.add = add  # type: ignore[method-assign]
        for (cls, name), original in originals.items():
            setattr(cls, name, original)
    elapsed = result["samples"] / result["rate"]
    polls.update(versions=result["versions"], worker_cpu_ms=round(1e3 * publishing.seconds))
    return timers.seconds, elapsed, result["samples"], polls


def profiled_split(
    topics: TrainerSettings, client: RegistryClient, base: list[Sample], expected: int
) -> dict[str, float]:
    """Run 2: the shares of the per-record part's time, from pyinstrument's samples."""
    sessions: list[Any] = []
    run = StreamLoop.run

    def profiled(self: StreamLoop) -> None:
        with Profiler(interval=0.001) as profiler:
            run(self)
        sessions.append(profiler.last_session)

    StreamLoop.run = profiled  # type: ignore[method-assign]
    try:
        run_trainer(topics, client, base, expected)
    finally:
        StreamLoop.run = run  # type: ignore[method-assign]
    inside: collections.Counter[str] = collections.Counter()
    _attribute(sessions[0].root_frame(), None, inside)
    total = sum(inside.values())
    return {part: seconds / total for part, seconds in inside.items()}


def _attribute(frame: Any, part: str | None, into: collections.Counter[str]) -> None:
    """Each frame's own time under the feed's ``add``, to the innermost INSIDE part it is in."""
    name = f"{frame.function} ({frame.file_path or ''})"
    if part is None and name.startswith("add (") and "feed" in name:
        part = RECORD_LOOP
    if part is not None:
        part = next((p for p, marks in INSIDE if any(m in name for m in marks)), part)
        into[part] += frame.time - sum(child.time for child in frame.children)
    for child in frame.children:
        _attribute(child, part, into)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--months", type=int, default=12, help="months of 2013 (January: baseline)")
    args = parser.parse_args()
    end = day_start_ms(f"2013-{args.months + 1:02d}-01" if args.months < 12 else "2014-01-01")
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), end)
    result = backfill(Featurizer(load_feature_module(MODULE)), from_envelopes(events))
    cut = day_start_ms("2013-02-01")
    base = [s for s in join_all(result.features, result.labels) if s.ts < cut]
    with infrastructure() as (bootstrap, _redis):
        topics = load_topics(bootstrap, result, cut)
        expected, _records = learnable_samples(topics)
        with registry_process(bootstrap) as client:
            seconds, elapsed, samples, counts = timed_run(topics, client, base, expected)
            bare = bare_consume(topics)
            split = profiled_split(topics, client, base, expected)
    seconds["the loop's own body (clock, rules, gauges)"] = elapsed - sum(seconds.values())
    records = seconds.pop(RECORDS)
    for part, share in split.items():
        seconds[f"records: {part}"] = records * share

    def row(part: str, s: float, note: str = "") -> tuple[str, str, str, str]:
        return part, f"{1e6 * s / samples:.2f} µs", f"{100 * s / elapsed:.0f} %", note

    rows = [row(part, s) for part, s in seconds.most_common()]
    rows.append(row("trainer loop, all", elapsed, f"{samples / elapsed:,.0f} samples/s"))
    consume = next(s for part, s in seconds.items() if part.startswith("consume"))
    rows.append(row("beyond the consume", elapsed - consume))
    rows.append(("bare consume (same run)", f"{1e6 / bare:.2f} µs", "", f"{bare:,.0f} samples/s"))
    if counts["polls"]:
        rows.append(
            (
                "polls (records each)",
                f"{counts['polls']:,}",
                "",
                f"{counts['messages'] / counts['polls']:,.0f} records per poll",
            )
        )
    if counts["versions"]:
        cpu_ms = counts["worker_cpu_ms"] / counts["versions"]
        rows.append(
            (
                "versions (the publishing worker's CPU)",
                f"{counts['versions']}",
                "",
                f"{cpu_ms:.2f} ms CPU each, in its own process",
            )
        )
    print_table(
        f"Trainer loop, per learned sample ({samples:,} samples; the per-record part split by "
        "pyinstrument's shares)",
        rows,
        columns=("part", "per sample", "share", "note"),
    )


if __name__ == "__main__":
    main()
