"""The compiled learning step of :class:`~millrace.learners.logreg.LogisticRegression`.

:func:`learn_windows` learns a run of mini-batches (windows) in one call: for each window in
order it scores the rows with the model as it stands (the prequential probabilities), then runs
rounds of the configured optimizer on the window's summed or mean gradient until ``max_rounds``
or until the loss improves by less than ``tol``. Rounds touch only the weights the window uses
(lazy L2). Every sum runs in row order, so the same windows give the same bytes, however they
are grouped into calls. It is the only implementation of these optimizers: ``learn_many`` is a
call with one window.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from millrace.evaluation import LOG_LOSS_EPS

SGD, ADAGRAD, FTRL = 0, 1, 2


@njit(cache=True, inline="always")
def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(z, -35.0), 35.0)))


@njit(cache=True, inline="always")
def _log_loss(p: float, y: float) -> float:
    q = min(max(p, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS)
    return -(y * math.log(q) + (1.0 - y) * math.log(1.0 - q))


@njit(cache=True)
def learn_windows(
    indptr: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    y: np.ndarray,
    offsets: np.ndarray,
    weights: np.ndarray,
    g2: np.ndarray,
    z: np.ndarray,
    scalars: np.ndarray,
    optimizer: int,
    lr: float,
    l2: float,
    alpha: float,
    beta: float,
    l1: float,
    decay: float,
    max_rounds: int,
    tol: float,
    p_out: np.ndarray,
    loss_sums: np.ndarray,
    round_losses: np.ndarray,
    rounds_run: np.ndarray,
) -> None:
    """Learn windows ``offsets[w] <= row < offsets[w + 1]`` of a CSR matrix in order.

    ``scalars`` holds (bias, the bias's squared-gradient sum, FTRL's bias z) and is updated in
    place with ``weights``, ``g2`` and ``z``. Out: ``p_out`` (each row's probability before its
    window was learned), ``loss_sums`` (each window's summed prequential log-loss),
    ``round_losses[w, r]`` (mean loss at the start of round r) and ``rounds_run``.
    """
    dim = weights.size
    local = np.full(dim, -1, dtype=np.int64)
    touched = np.empty(dim, dtype=np.int64)
    grad = np.zeros(dim)
    curvature = np.zeros(dim)
    for w in range(offsets.size - 1):
        r0, r1 = offsets[w], offsets[w + 1]
        n = r1 - r0
        rounds_run[w] = 0
        loss_sums[w] = 0.0
        if n == 0:
            continue
        k0, k1 = indptr[r0], indptr[r1]
        count = 0
        for k in range(k0, k1):
            c = cols[k]
            if local[c] < 0:
                local[c] = count
                touched[count] = c
                count += 1
        curvature_bias = 0.0
        if optimizer == SGD:
            # A diagonal bound on the summed log-loss's Hessian, sum_i 0.25 |x_ij| |x_i|_1 (the
            # intercept counts as a feature of value 1): a step damped by it never overshoots.
            for j in range(count):
                curvature[j] = 0.0
            for i in range(r0, r1):
                norm = 1.0
                for k in range(indptr[i], indptr[i + 1]):
                    norm += abs(vals[k])
                for k in range(indptr[i], indptr[i + 1]):
                    curvature[local[cols[k]]] += 0.25 * abs(vals[k]) * norm
                curvature_bias += 0.25 * norm
        p = np.empty(n)
        previous = np.inf
        for round_no in range(max_rounds):
            bias = scalars[0]
            loss_sum = 0.0
            for i in range(r0, r1):
                logit = bias
                for k in range(indptr[i], indptr[i + 1]):
                    logit += weights[cols[k]] * vals[k]
                p[i - r0] = _sigmoid(logit)
                loss_sum += _log_loss(p[i - r0], y[i])
            loss = loss_sum / n
            if round_no == 0:
                p_out[r0:r1] = p
                loss_sums[w] = loss_sum
            round_losses[w, round_no] = loss
            rounds_run[w] = round_no + 1
            if round_no > 0 and previous - loss < tol:
                break
            previous = loss
            for j in range(count):
                grad[j] = 0.0
            grad_bias = 0.0
            for i in range(r0, r1):
                residual = (p[i - r0] - y[i]) / n
                grad_bias += residual
                for k in range(indptr[i], indptr[i + 1]):
                    grad[local[cols[k]]] += residual * vals[k]
            _step(
                optimizer, touched, count, grad, grad_bias, curvature, curvature_bias, n,
                weights, g2, z, scalars, lr, l2, alpha, beta, l1, decay,
            )  # fmt: skip
        for j in range(count):
            local[touched[j]] = -1


@njit(cache=True)
def _step(
    optimizer: int,
    touched: np.ndarray,
    count: int,
    grad: np.ndarray,
    grad_bias: float,
    curvature: np.ndarray,
    curvature_bias: float,
    n: int,
    weights: np.ndarray,
    g2: np.ndarray,
    z: np.ndarray,
    scalars: np.ndarray,
    lr: float,
    l2: float,
    alpha: float,
    beta: float,
    l1: float,
    decay: float,
) -> None:
    """One optimizer step on the touched weights and the bias, from the mean gradient."""
    if optimizer == SGD:
        # On the summed gradient, so lr means what it means for per-sample SGD.
        for j in range(count):
            c = touched[j]
            w = weights[c]
            weights[c] = w - (grad[j] * n + l2 * w) / (1.0 / lr + curvature[j])
        scalars[0] -= grad_bias * n / (1.0 / lr + curvature_bias)
    elif optimizer == ADAGRAD:
        for j in range(count):
            c = touched[j]
            w = weights[c]
            g = grad[j] + l2 * w
            g2[c] = g2[c] * decay + g * g
            weights[c] = w - lr * g / (math.sqrt(g2[c]) + 1e-8)
        scalars[1] = scalars[1] * decay + grad_bias * grad_bias
        scalars[0] -= lr * grad_bias / (math.sqrt(scalars[1]) + 1e-8)
    else:
        # FTRL-Proximal (McMahan et al., 2013), per touched coordinate.
        for j in range(count):
            c = touched[j]
            w = weights[c]
            n_old = g2[c]
            n_new = n_old + grad[j] * grad[j]
            z[c] += grad[j] - (math.sqrt(n_new) - math.sqrt(n_old)) / alpha * w
            g2[c] = n_new
            if abs(z[c]) <= l1:
                weights[c] = 0.0
            else:
                sign = 1.0 if z[c] > 0 else -1.0
                weights[c] = (sign * l1 - z[c]) / ((beta + math.sqrt(n_new)) / alpha + l2)
        n_bias = scalars[1] + grad_bias * grad_bias
        scalars[2] += grad_bias - (math.sqrt(n_bias) - math.sqrt(scalars[1])) / alpha * scalars[0]
        scalars[1] = n_bias
        scalars[0] = -scalars[2] / ((beta + math.sqrt(n_bias)) / alpha)


@njit(cache=True)
def segment_log_loss_sums(p: np.ndarray, y: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each segment's summed log-loss, in row order (the same bits however rows are grouped)."""
    sums = np.zeros(offsets.size - 1)
    for w in range(offsets.size - 1):
        total = 0.0
        for i in range(offsets[w], offsets[w + 1]):
            total += _log_loss(p[i], y[i])
        sums[w] = total
    return sums
