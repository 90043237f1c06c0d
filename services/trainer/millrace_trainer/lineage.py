"""What the next version is built from since its parent, as the trainer accumulates it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from millrace.evaluation import Scores
from millrace.kafka import SourcePartition


@dataclass
class Lineage:
    parent: int | None
    #: partition -> [first, last] offset consumed since the parent.
    offsets: dict[str, list[int]] = field(default_factory=dict)
    #: The learning model's prequential scores since the parent ...
    scores: Scores = field(default_factory=Scores)
    #: ... and the parent's own on the same batches (kept when the validation gate is on).
    parent_scores: Scores = field(default_factory=Scores)
    batches: int = 0
    rounds: list[int] = field(default_factory=list)
    #: Partitions that left the watermark while idle (wall-clock time decided it).
    idle: list[dict[str, Any]] = field(default_factory=list)

    def consumed(self, partition: SourcePartition, first: int, last: int) -> None:
        span = self.offsets.setdefault(str(partition), [first, last])
        span[0] = min(span[0], first)
        span[1] = max(span[1], last)

    @property
    def samples(self) -> int:
        return self.scores.samples

    def metrics(self) -> dict[str, Any]:
        return {
            "prequential": self.scores.as_dict(),
            "batches": self.batches,
            "rounds_per_batch": self.rounds,
            "idle_partitions": self.idle,
        }

    def state(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "offsets": self.offsets,
            "scores": self.scores.state(),
            "parent_scores": self.parent_scores.state(),
            "batches": self.batches,
            "rounds": self.rounds,
            "idle": self.idle,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Lineage:
        return cls(
            parent=state["parent"],
            offsets={k: [int(a), int(b)] for k, (a, b) in state["offsets"].items()},
            scores=Scores.from_state(state["scores"]),
            parent_scores=Scores.from_state(state["parent_scores"]),
            batches=int(state["batches"]),
            rounds=[int(r) for r in state["rounds"]],
            idle=list(state.get("idle", [])),
        )
