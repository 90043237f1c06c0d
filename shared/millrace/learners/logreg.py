"""Logistic regression on hashed features, trained in rounds over each mini-batch."""

from __future__ import annotations

import base64
import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
from millrace_hashing import hash_features

from millrace.learners import kernels
from millrace.learners.base import Classifier, Features, RoundStats, WindowStats


@dataclass(frozen=True)
class SparseRows:
    """Feature dicts as coordinates: row ``rows[k]`` has ``values[k]`` at weight ``cols[k]``;
    row ``i``'s entries are ``indptr[i]:indptr[i + 1]`` (CSR, for the compiled step)."""

    n: int
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    indptr: np.ndarray

    @classmethod
    def from_lengths(cls, cols: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> SparseRows:
        """Rows of ``lengths[i]`` entries each, laid out one after the other."""
        n = len(lengths)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return cls(n, np.repeat(np.arange(n, dtype=np.int64), lengths), cols, values, indptr)


Optimizer = Literal["sgd", "adagrad", "ftrl"]
_OPTIMIZERS: dict[Optimizer, int] = {
    "sgd": kernels.SGD,
    "adagrad": kernels.ADAGRAD,
    "ftrl": kernels.FTRL,
}


class LogisticRegression(Classifier):
    """Binary logistic regression over sparse, named features.

    Feature names are hashed into ``2**dim_log2`` weights (a stable CRC-32, so the same name maps
    to the same weight in every process). Each call to :meth:`learn_many` runs full-batch
    gradient rounds until ``max_rounds`` or until the loss improves by less than ``tol``; the
    optimizer state carries over from batch to batch. Three optimizers:

    - ``"sgd"``: a step on the batch's *summed* gradient, so ``lr`` means what it means for
      per-sample SGD, damped by a bound on the loss's curvature (``0.25 |x_ij| |x_i|_1`` summed
      over the batch): a few samples take plain SGD steps, a large batch (the baseline) takes
      bounded steps whose rounds converge instead of diverging.
    - ``"adagrad"``: per-coordinate AdaGrad steps on the mean gradient (``decay`` < 1 forgets old
      squared gradients, RMSProp-style).
    - ``"ftrl"``: FTRL-Proximal (McMahan et al., 2013: ``alpha``, ``beta``, ``l1``, ``l2``).

    All arithmetic is deterministic, so the same batches give the same bytes. The defaults are
    the trainer's: SGD at ``lr`` 0.01, one round per stream batch (measured best on the flights
    year with five-minute batches; the baseline asks for more rounds per call).

    Parameters
    ----------
    lr
        Step size (SGD, AdaGrad).
    l2
        L2 penalty on the weights (not the intercept).
    optimizer
        ``"sgd"``, ``"adagrad"`` or ``"ftrl"``.
    decay
        AdaGrad only: each round first multiplies the accumulated squared gradients by this
        (1 = plain AdaGrad; below 1 keeps the step size from vanishing on a drifting stream).
    alpha, beta, l1
        FTRL-Proximal's learning-rate parameters and L1 penalty (``l2`` is shared).
    max_rounds
        Rounds per mini-batch at most.
    tol
        Stop iterating a batch once the loss improves by less than this.
    dim_log2
        Number of hashed weights, as a power of two.

    Examples
    --------

    >>> from millrace.learners import LogisticRegression
    >>> model = LogisticRegression(max_rounds=20)
    >>> X = [{"late_before": 1.0}, {"late_before": 0.0}] * 50
    >>> y = [1.0, 0.0] * 50
    >>> stats = model.learn_many(X, y)
    >>> stats[-1].loss < stats[0].loss
    True
    >>> model.predict_proba_one({"late_before": 1.0})[True] > 0.5
    True

    """

    kind = "logistic_regression"
    # Version 2 stores the weight arrays zlib-compressed: the hashed space is mostly zeros, so
    # an artifact or a checkpoint is a few KB instead of half a MB.
    state_version = 2
    readable_versions = (1, 2)

    def __init__(
        self,
        lr: float = 0.01,
        l2: float = 1e-4,
        max_rounds: int = 1,
        tol: float = 1e-4,
        dim_log2: int = 14,
        optimizer: Optimizer = "sgd",
        alpha: float = 0.1,
        beta: float = 1.0,
        l1: float = 0.0,
        decay: float = 1.0,
    ) -> None:
        if not 4 <= dim_log2 <= 24:
            raise ValueError("dim_log2 must be between 4 and 24")
        if optimizer not in ("sgd", "adagrad", "ftrl"):
            raise ValueError("optimizer must be 'sgd', 'adagrad' or 'ftrl'")
        if not 0.0 < decay <= 1.0:
            raise ValueError("decay must be in (0, 1]")
        self.decay = decay
        self.optimizer = optimizer
        self.alpha = alpha
        self.beta = beta
        self.l1 = l1
        self.lr = lr
        self.l2 = l2
        self.max_rounds = max_rounds
        self.tol = tol
        self.dim_log2 = dim_log2
        dim = 1 << dim_log2
        self.weights = np.zeros(dim)
        self.bias = 0.0
        self._g2 = np.zeros(dim)  # AdaGrad: squared gradients; FTRL: n
        self._g2_bias = 0.0
        self._z = np.zeros(dim)  # FTRL only
        self._z_bias = 0.0
        self.n_seen = 0

    def encode_many(self, X: Sequence[Features] | SparseRows) -> SparseRows:
        """Encode feature dicts once; the result can be passed to both
        :meth:`predict_proba_many` and :meth:`learn_many` (the trainer scores, then learns)."""
        if isinstance(X, SparseRows):
            return X
        cols, values, lengths = hash_features(X, self.mask)  # compiled: no Python call per name
        return SparseRows.from_lengths(
            np.frombuffer(cols, np.int64),
            np.frombuffer(values, np.float64),
            np.frombuffer(lengths, np.int64),
        )

    @property
    def mask(self) -> int:
        """A name's weight is its CRC-32 (``zlib.crc32`` of its UTF-8) masked with this."""
        return (1 << self.dim_log2) - 1

    def encode_hashed(
        self, cols: np.ndarray, values: np.ndarray, lengths: np.ndarray
    ) -> SparseRows:
        """Rows whose names were hashed already (each name's CRC-32 masked with :attr:`mask`,
        in the order of the record): what :meth:`encode_many` makes of their dicts."""
        return SparseRows.from_lengths(cols, values, lengths)

    def learn_many(
        self,
        X: Sequence[Features] | SparseRows,
        y: Sequence[float],
        max_rounds: int | None = None,
    ) -> list[RoundStats]:
        encoded = self.encode_many(X)
        if encoded.n == 0:
            return []
        stats = self.learn_windows(encoded, y, np.array([0, encoded.n]), max_rounds)
        n = encoded.n
        return [
            RoundStats(r + 1, float(stats.round_losses[0, r]), n) for r in range(stats.rounds[0])
        ]

    def learn_windows(
        self,
        X: Sequence[Features] | SparseRows,
        y: Sequence[float] | np.ndarray,
        offsets: np.ndarray,
        max_rounds: int | None = None,
    ) -> WindowStats:
        """Learn consecutive mini-batches ``offsets[w]:offsets[w + 1]`` in one compiled call,
        each scored before it is learned (see :mod:`millrace.learners.kernels`)."""
        encoded = self.encode_many(X)
        target = np.asarray(y, dtype=float)
        if len(target) != encoded.n:
            raise ValueError("X and y differ in length")
        rounds_limit = self.max_rounds if max_rounds is None else max_rounds
        windows = len(offsets) - 1
        stats = WindowStats(
            probabilities=np.empty(encoded.n),
            loss_sums=np.empty(windows),
            round_losses=np.full((windows, rounds_limit), np.nan),
            rounds=np.zeros(windows, dtype=np.int64),
        )
        scalars = np.array([self.bias, self._g2_bias, self._z_bias])
        kernels.learn_windows(
            encoded.indptr, encoded.cols, encoded.values, target,
            np.asarray(offsets, dtype=np.int64), self.weights, self._g2, self._z, scalars,
            _OPTIMIZERS[self.optimizer], self.lr, self.l2, self.alpha, self.beta, self.l1,
            self.decay, rounds_limit, self.tol,
            stats.probabilities, stats.loss_sums, stats.round_losses, stats.rounds,
        )  # fmt: skip
        self.bias, self._g2_bias, self._z_bias = (float(v) for v in scalars)
        self.n_seen += encoded.n
        return stats

    def predict_proba_many(self, X: Sequence[Features] | SparseRows) -> np.ndarray:
        encoded = self.encode_many(X)
        weighted = self.weights[encoded.cols] * encoded.values
        return _sigmoid(
            self.bias + np.bincount(encoded.rows, weights=weighted, minlength=encoded.n)
        )

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state_version": self.state_version,
            "config": self.config,
            "bias": float(self.bias),
            "g2_bias": float(self._g2_bias),
            "n_seen": self.n_seen,
            "weights": _b64(self.weights),
            "g2": _b64(self._g2),
            "z": _b64(self._z),
            "z_bias": float(self._z_bias),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        cls.check_state(state)
        model = cls(**state["config"])
        compressed = state["state_version"] >= 2
        model.weights = _unb64(state["weights"], model.weights.size, compressed)
        model._g2 = _unb64(state["g2"], model.weights.size, compressed)
        model.bias = float(state["bias"])
        model._g2_bias = float(state["g2_bias"])
        model.n_seen = int(state["n_seen"])
        model._z = _unb64(state["z"], model.weights.size, compressed)
        model._z_bias = float(state["z_bias"])
        return model


def _sigmoid(z: np.ndarray) -> np.ndarray:
    sigmoid: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))
    return sigmoid


def _b64(array: np.ndarray) -> str:
    # All +0.0 (SGD's g2 and z, in every version and checkpoint): the same text, made once.
    if not array.any() and not np.signbit(array).any():
        return _zeros_b64(array.size)
    return _compressed_b64(array)


def _compressed_b64(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(array.astype("<f8").tobytes(), 6)).decode()


@functools.cache
def _zeros_b64(size: int) -> str:
    return _compressed_b64(np.zeros(size))


def _unb64(text: str, size: int, compressed: bool) -> np.ndarray:
    data = base64.b64decode(text, validate=True)
    if compressed:
        decompressor = zlib.decompressobj()
        data = decompressor.decompress(data, size * 8 + 1)  # bounded: never more than declared
        if not decompressor.eof:
            raise ValueError(f"expected {size} weights, found more")
    array = np.frombuffer(data, dtype="<f8").copy()
    if array.size != size:
        raise ValueError(f"expected {size} weights, found {array.size}")
    return array
