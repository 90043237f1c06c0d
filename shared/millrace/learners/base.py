"""The learner base classes, in River's manner: a small chain, hyperparameters declared once.

- :class:`Learner`: what every learner offers. Its hyperparameters are its constructor's
  arguments, kept as attributes of the same names, so :attr:`Learner.config` and
  :meth:`Learner.clone` derive from the signature and nothing lists them twice.
- :class:`Classifier`: a learner that predicts probabilities (every learner the trainer and
  the predictor run: prequential scores, the gate and live quality need probabilities).

States are plain JSON-able data, versioned; :func:`learner_from_state` finds the class from the
state's ``kind``. A pickle-based state (a River estimator) loads only from verified bytes.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from millrace.errors import MillraceError
from millrace.evaluation import log_loss_sum

Features = dict[str, float]


@dataclass(frozen=True)
class RoundStats:
    round: int
    loss: float
    samples: int


@dataclass(frozen=True)
class WindowStats:
    """What learning consecutive mini-batches (windows) reports, per row and per window."""

    #: Each row's probability before its window was learned (prequential).
    probabilities: np.ndarray
    #: Each window's summed prequential log-loss, summed in row order.
    loss_sums: np.ndarray
    #: ``round_losses[w, r]``: window w's mean training loss at the start of round r.
    round_losses: np.ndarray
    #: Rounds run per window.
    rounds: np.ndarray


class PickleRefused(MillraceError, ValueError):
    pass


class Learner(ABC):
    """Learns from mini-batches in rounds; serializes to a versioned, JSON-able state."""

    #: The name a state carries, to find its class again.
    kind: ClassVar[str]
    state_version: ClassVar[int] = 1
    #: The state versions :meth:`from_state` still reads (older artifacts stay loadable).
    readable_versions: ClassVar[tuple[int, ...]] = (1,)
    #: True when the state holds pickle bytes, which only verified artifacts may load.
    uses_pickle: ClassVar[bool] = False

    @property
    def config(self) -> dict[str, Any]:
        """The hyperparameters: the constructor's arguments, read back from the attributes of
        the same names."""
        parameters = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in parameters if name != "self"}

    def clone(self) -> Self:
        """A fresh, untrained learner with the same hyperparameters."""
        return type(self)(**self.config)

    def encode_many(self, X: Sequence[Features]) -> Any:
        """Features in whatever form :meth:`learn_many` and the batch predictions read fastest;
        the trainer encodes a batch once, then scores and learns it. By default, as they are."""
        return X

    @abstractmethod
    def learn_many(
        self, X: Any, y: Sequence[float], max_rounds: int | None = None
    ) -> list[RoundStats]:
        """Learn one mini-batch (feature dicts or :meth:`encode_many`'s result) in rounds;
        ``max_rounds`` overrides the learner's own limit for this batch (the baseline). An
        empty batch changes nothing and returns no rounds."""

    def learn_one(self, x: Features, y: float) -> None:
        """Learn one sample: a mini-batch of one."""
        self.learn_many([x], [y])

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything needed to continue learning, as JSON-able data with ``kind`` and
        ``state_version``."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """The learner :meth:`state` describes."""

    @classmethod
    def check_state(cls, state: dict[str, Any]) -> None:
        if state.get("kind") != cls.kind or state.get("state_version") not in cls.readable_versions:
            raise ValueError(f"not a {cls.kind} state of version {cls.readable_versions}")


class Classifier(Learner):
    """A binary classifier: probabilities of the positive class.

    Every subclass that names a ``kind`` is registered under it, which is how
    :func:`learner_from_state` finds its class again: a learner of one's own registers by being
    defined (and imported before its states are loaded)."""

    registered: ClassVar[dict[str, type[Classifier]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is None:
            return
        taken = Classifier.registered.get(kind)
        if taken is not None and taken.__qualname__ != cls.__qualname__:
            raise TypeError(
                f"learner kind {kind!r} is taken by {taken.__module__}.{taken.__name__}"
            )
        Classifier.registered[kind] = cls

    @abstractmethod
    def predict_proba_many(self, X: Any) -> np.ndarray:
        """P(y = 1) for each row of a batch (feature dicts or :meth:`encode_many`'s result)."""

    def predict_proba_one(self, x: Features) -> dict[bool, float]:
        p = float(self.predict_proba_many([x])[0])
        return {False: 1.0 - p, True: p}

    def learn_windows(
        self,
        X: Sequence[Features],
        y: Sequence[float] | np.ndarray,
        offsets: np.ndarray,
        max_rounds: int | None = None,
    ) -> WindowStats:
        """Learn consecutive mini-batches, rows ``offsets[w]:offsets[w + 1]``, in order, each
        scored before it is learned. Learners with a compiled path override this."""
        windows = len(offsets) - 1
        limit = 1 if max_rounds is None else max_rounds
        stats = WindowStats(
            np.empty(len(X)),
            np.zeros(windows),
            np.full((windows, limit), np.nan),
            np.zeros(windows, dtype=np.int64),
        )
        target = np.asarray(y, dtype=float)
        for w in range(windows):
            a, b = int(offsets[w]), int(offsets[w + 1])
            if a == b:
                continue
            p = self.predict_proba_many(X[a:b])
            stats.probabilities[a:b] = p
            stats.loss_sums[w] = log_loss_sum(target[a:b], p)
            rounds = self.learn_many(X[a:b], target[a:b].tolist(), max_rounds)
            stats.rounds[w] = len(rounds)
            for r, round_stats in enumerate(rounds[:limit]):
                stats.round_losses[w, r] = round_stats.loss
        return stats


def learner_from_state(state: dict[str, Any], allow_pickle: bool = False) -> Classifier:
    """Rebuild a learner; pickle-based states (River) only with ``allow_pickle`` — that is, from
    bytes whose signature was verified."""
    learner = learner_class(state)
    if learner.uses_pickle and not allow_pickle:
        raise PickleRefused(
            f"a {learner.kind} state is pickle: refused unless its artifact is signed"
        )
    return learner.from_state(state)


def learner_class(state: dict[str, Any]) -> type[Classifier]:
    """The registered learner a state's ``kind`` names (nothing in the state is loaded): its
    ``uses_pickle`` says whether loading the state would unpickle."""
    kinds = Classifier.registered
    kind = state.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(f"unknown learner kind {kind!r} (registered: {sorted(kinds)})")
    return kinds[kind]
