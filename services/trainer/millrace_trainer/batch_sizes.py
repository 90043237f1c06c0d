"""Saying so when the mini-batches are too small for rounds to mean anything.

With one sample in a window, "several rounds per batch" is plain one-sample SGD repeated: the
learner overfits each sample in turn. That happens quietly when the events are sparse for the
window (daily events in five-minute windows), so the trainer watches the recent batch sizes,
exports them, and logs a warning naming the settings that fix it; once, until the batches grow.

>>> watch = BatchSizeWatch(recent=4)
>>> [watch.add([1, 1]), watch.add([2, 1])]
[False, True]
>>> watch.mean, watch.add([1])
(1.25, False)
>>> watch.add([40, 40, 40, 40]), watch.warned
(False, False)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

#: At most this many samples per batch on average: rounds are near-pointless.
TOO_FEW = 1.5
#: The warning comes again only after the batches were at least this big on average.
ENOUGH = 3.0


class BatchSizeWatch:
    def __init__(self, recent: int = 50) -> None:
        self._sizes: deque[int] = deque(maxlen=recent)
        #: Whether the current run of small batches was reported.
        self.warned = False

    @property
    def mean(self) -> float:
        return sum(self._sizes) / len(self._sizes) if self._sizes else 0.0

    def add(self, sizes: Iterable[int]) -> bool:
        """Count the batches just learned; True when a warning is due now (a full window of
        recent batches averaging at most :data:`TOO_FEW` samples, not reported yet)."""
        self._sizes.extend(sizes)
        full = len(self._sizes) == self._sizes.maxlen
        if self.warned and self.mean >= ENOUGH:
            self.warned = False
        if full and not self.warned and self.mean <= TOO_FEW:
            self.warned = True
            return True
        return False
