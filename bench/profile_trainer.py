"""Where the trainer's time goes: the service loop over the flights year, part by part.

The same run as ``bench_trainer.py``'s (the service's default settings, a registry process,
checkpoints to Kafka), beside a bare consume of the same topics: each part of the poll loop
(consume, the records' decode-and-join, the ready windows, learning, publishing, checkpoints)
under a wall-clock timer of its own, exclusive of the parts it calls; the timers are entered
once per poll or per batch, never per record, so they cost nothing measurable, and they count
only from the first record to the last sample learned (the run's clock). The records' part is
one compiled call a poll (``services/trainer/join_core``): a Python profiler sees nothing
inside it.

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

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.join import Sample, join_all
from millrace.registry_client import RegistryClient
from millrace_flights.events import flight_events, load_flights
from millrace_trainer.batching import WindowedJoin
from millrace_trainer.service import learnable_samples
from millrace_trainer.settings import TrainerSettings
from millrace_trainer.stream import StreamLoop
from millrace_trainer.training import StreamTrainer

RECORDS = "records: decode + join (compiled, a poll at a time)"
#: The timed parts: (name, class, method).
TIMED = [
    ("consume (librdkafka + wrapper)", None, "consume"),
    (RECORDS, WindowedJoin, "add_poll"),
    ("windows ready (expiry, sort, batch)", WindowedJoin, "ready"),
    ("learning (scores, learner, lineage)", StreamTrainer, "learn_stream"),
    ("publish + promote (registry calls)", StreamTrainer, "publish_if_due"),
    ("checkpoint (snapshot, sign, commit)", StreamLoop, "checkpoint"),
]


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

    add = WindowedJoin.add_poll

    def add_starting(
        self: WindowedJoin, messages: list[Any], features_topic: str, now: float = 0.0
    ) -> int:
        if not timers.counting and messages:  # the run's clock starts with the first records
            timers.counting = True
        return add(self, messages, features_topic, now)

    StreamLoop.run = run_timed  # type: ignore[method-assign]
    WindowedJoin.add_poll = add_starting  # type: ignore[method-assign]
    StreamTrainer.learn_stream = timers.wrap(TIMED[3][0], learn_counted)  # type: ignore[method-assign]
    try:
        with publishing:
            result = run_trainer(topics, client, base, expected)
    finally:
        StreamLoop.run = run  # type: ignore[method-assign]
        WindowedJoin.add_poll = add  # type: ignore[method-assign]
        for (cls, name), original in originals.items():
            setattr(cls, name, original)
    elapsed = result["samples"] / result["rate"]
    polls.update(versions=result["versions"], worker_cpu_ms=round(1e3 * publishing.seconds))
    return timers.seconds, elapsed, result["samples"], polls


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
    seconds["the loop's own body (clock, rules, gauges)"] = elapsed - sum(seconds.values())

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
        f"Trainer loop, per learned sample ({samples:,} samples)",
        rows,
        columns=("part", "per sample", "share", "note"),
    )


if __name__ == "__main__":
    main()
