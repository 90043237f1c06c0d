"""The baseline's own fit: how well it fits the bounded data it was trained on, and how well a
copy trained on all but the newest slice of it predicts that slice.

The stream versions carry prequential scores (each batch scored before it is learned). The
baseline has none of its own: scored that way it would show an untrained model's 0.693 and AUC
0.5. Its fit is a different figure, so it is reported beside, not instead, and labelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from millrace.evaluation import Scores
from millrace.join import Sample
from millrace.learners.base import Classifier

#: The newest part of the bounded data kept out of the copy's training, in event-time order.
HELD_OUT = 0.1
WHAT = "the baseline's fit on its own bounded data (not prequential)"


def baseline_fit(
    trained: Classifier,
    untrained: Classifier,
    samples: Sequence[Sample],
    rounds: int | None,
) -> dict[str, Any]:
    """``trained`` scored on ``samples``; ``untrained`` (a fresh learner of the same settings)
    trained on all but the newest :data:`HELD_OUT` of them in event-time order, and scored on
    that slice."""
    ordered = sorted(samples, key=lambda s: (s.ts, s.id))
    training = _scored(trained, ordered)
    fit: dict[str, Any] = {"what": WHAT, "training": training.as_dict()}
    cut = int(len(ordered) * (1 - HELD_OUT))
    if 0 < cut < len(ordered):
        seen, held = ordered[:cut], ordered[cut:]
        X = untrained.encode_many([s.features for s in seen])
        y = np.fromiter((s.label for s in seen), float, len(seen))
        untrained.learn_windows(X, y, np.array([0, len(seen)], dtype=np.int64), rounds)
        fit["held_out"] = {
            "fraction": HELD_OUT,
            "trained_on": len(seen),
            "from_ts": held[0].ts,
            **_scored(untrained, held).as_dict(),
        }
    return fit


def _scored(learner: Classifier, samples: Sequence[Sample]) -> Scores:
    scores = Scores()
    X = learner.encode_many([s.features for s in samples])
    scores.add(learner.predict_proba_many(X), [s.label for s in samples])
    return scores
