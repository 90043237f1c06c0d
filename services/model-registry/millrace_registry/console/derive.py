"""What the console plots, derived from the services' Prometheus text.

A scrape of one instance is a map from (sample name, labels) to value. Between two scrapes of
the same instance a counter gives a rate and a histogram's buckets give a quantile, as
Prometheus's ``rate`` and ``histogram_quantile`` would; a gauge is taken as it is. The points of
several instances of one role (two featurizers, three predictors) are then combined: rates and
counts add up, lags and watermarks take the largest, live quality the mean.

>>> text = 'millrace_featurizer_events_total 100\\nmillrace_featurizer_event_time_lag_ms 2500\\n'
>>> before = parse(text)
>>> after = parse(text.replace(" 100", " 400"))
>>> for point in derive("featurizer", after, before, 10.0):
...     print(point.series, point.value)
featurizer.lag_s 2.5
featurizer.events_per_s 30.0
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Scrape = dict[tuple[str, Labels], float]
Combine = Literal["sum", "max", "mean"]


@dataclass(frozen=True)
class Point:
    series: str
    labels: Labels
    value: float


#: Every series the console keeps, and how the instances of a role combine into one.
SERIES: dict[str, Combine] = {
    "featurizer.events_per_s": "sum",
    "featurizer.lag_s": "max",
    "featurizer.dead_letters": "sum",
    "trainer.samples_per_s": "sum",
    "trainer.watermark_ms": "max",
    "trainer.rolling_log_loss": "mean",
    "trainer.rolling_auc": "mean",
    "trainer.rolling_accuracy": "mean",
    "predictor.requests_per_s": "sum",
    "predictor.p99_ms": "max",
    "predictor.live_log_loss": "mean",
    "predictor.live_accuracy": "mean",
    "predictor.live_labels": "sum",
    "predictor.serving_version": "max",
}


def parse(text: str) -> Scrape:
    """One instance's ``/metrics`` text (raises ValueError when it is not Prometheus text)."""
    scrape: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scrape[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return scrape


def derive(role: str, now: Scrape, before: Scrape | None, seconds: float) -> list[Point]:
    """The points of one instance of ``role``; rates only when there is an earlier scrape."""
    deriver = _DERIVERS.get(role)
    return deriver(_Pair(now, before, seconds)) if deriver else []


def combine(instances: Iterable[list[Point]]) -> list[Point]:
    """The points of a role's instances as one point per series and labels."""
    grouped: dict[tuple[str, Labels], list[float]] = defaultdict(list)
    for points in instances:
        for point in points:
            grouped[(point.series, point.labels)].append(point.value)
    combined = []
    for (series, labels), values in grouped.items():
        how = SERIES[series]
        value = sum(values) if how == "sum" else max(values) if how == "max" else _mean(values)
        combined.append(Point(series, labels, value))
    return combined


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of observations counted in cumulative buckets (upper bound -> count),
    interpolated inside the bucket it falls in, as Prometheus's ``histogram_quantile`` does.

    >>> quantile(0.5, {0.1: 10.0, 0.2: 30.0, math.inf: 30.0})
    0.125
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


class _Pair:
    """Two scrapes of one instance, and the seconds between them."""

    def __init__(self, now: Scrape, before: Scrape | None, seconds: float) -> None:
        self.now, self.before, self.seconds = now, before, seconds

    def gauges(self, name: str, by: str | None = None) -> dict[Labels, float]:
        out: dict[Labels, float] = {}
        for (sample, labels), value in self.now.items():
            if sample == name:
                key = _only(labels, by)
                out[key] = out.get(key, 0.0) + value
        return out

    def increases(self, name: str, by: str | None = None) -> dict[Labels, float] | None:
        """How much a counter grew, summed by label ``by``; None without an earlier scrape."""
        if self.before is None or self.seconds <= 0:
            return None
        out: dict[Labels, float] = {}
        for labels, grown in self._growth(name, self.before):
            group = _only(labels, by)
            out[group] = out.get(group, 0.0) + grown
        return out

    def rates(self, name: str, by: str | None = None) -> dict[Labels, float]:
        grown = self.increases(name, by)
        return {k: v / self.seconds for k, v in (grown or {}).items()}

    def bucket_increases(self, name: str, by: str) -> dict[Labels, dict[float, float]]:
        """A histogram's bucket increases per label ``by``: {labels: {upper bound: count}}."""
        if self.before is None or self.seconds <= 0:
            return {}
        out: defaultdict[Labels, defaultdict[float, float]] = defaultdict(
            lambda: defaultdict(float)
        )
        for labels, grown in self._growth(name, self.before):
            out[_only(labels, by)][float(dict(labels)["le"])] += grown
        return {labels: dict(buckets) for labels, buckets in out.items()}

    def _growth(self, name: str, before: Scrape) -> Iterator[tuple[Labels, float]]:
        """Each sample of counter ``name`` and how much it grew since ``before``. A counter that
        went down restarted, so all of its value now is growth."""
        for (sample, labels), value in self.now.items():
            if sample == name:
                earlier = before.get((sample, labels), 0.0)
                yield labels, value - earlier if value >= earlier else value


def _featurizer(p: _Pair) -> list[Point]:
    return [
        *_points("featurizer.lag_s", p.gauges("millrace_featurizer_event_time_lag_ms"), 1e-3),
        *_points("featurizer.events_per_s", p.rates("millrace_featurizer_events_total")),
        *_points(
            "featurizer.dead_letters", p.gauges("millrace_featurizer_dead_letters_total", "kind")
        ),
    ]


def _trainer(p: _Pair) -> list[Point]:
    rolling = p.gauges("millrace_trainer_rolling_score", "metric")
    return [
        *_points("trainer.watermark_ms", p.gauges("millrace_trainer_watermark_ms")),
        *_points("trainer.samples_per_s", p.rates("millrace_trainer_samples_total")),
        *(
            Point(f"trainer.rolling_{dict(labels)['metric']}", (), value)
            for labels, value in rolling.items()
            if f"trainer.rolling_{dict(labels)['metric']}" in SERIES
        ),
    ]


def _predictor(p: _Pair) -> list[Point]:
    p99 = {
        labels: q * 1e3
        for labels, buckets in p.bucket_increases(
            "millrace_predictor_latency_seconds_bucket", "version"
        ).items()
        if (q := quantile(0.99, buckets)) is not None
    }
    # A version's live scores stay in the predictor's metrics after it stops being scored;
    # only versions that met new labels since the last scrape get a point.
    grown = p.increases("millrace_predictor_live_labels", "version")
    scored = None if grown is None else {labels for labels, n in grown.items() if n > 0}

    def live(name: str) -> dict[Labels, float]:
        values = p.gauges(name, "version")
        return values if scored is None else {k: v for k, v in values.items() if k in scored}

    return [
        *_points("predictor.serving_version", p.gauges("millrace_predictor_serving_version")),
        *_points("predictor.live_log_loss", live("millrace_predictor_live_log_loss")),
        *_points("predictor.live_accuracy", live("millrace_predictor_live_accuracy")),
        *_points("predictor.live_labels", p.gauges("millrace_predictor_live_labels", "version")),
        *_points(
            "predictor.requests_per_s", p.rates("millrace_predictor_requests_total", "version")
        ),
        *_points("predictor.p99_ms", p99),
    ]


_DERIVERS: dict[str, Callable[[_Pair], list[Point]]] = {
    "featurizer": _featurizer,
    "trainer": _trainer,
    "predictor": _predictor,
}


def _points(series: str, values: dict[Labels, float], scale: float = 1.0) -> list[Point]:
    return [
        Point(series, labels, value * scale)
        for labels, value in values.items()
        if math.isfinite(value)
    ]


def _only(labels: Labels, name: str | None) -> Labels:
    return tuple((k, v) for k, v in labels if k == name) if name else ()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
