"""The entity states of the partitions this replica owns, kept in memory between batches.

Per-key order is offset order and a partition has one owner at a time, so while this replica
owns a partition, nobody else changes the states of its entities: after the first read from
Redis, the state in memory is the state (Redis gets the same writes after each commit). What
makes the memory untrustworthy is dropped with it:

- an ownership change: a partition's states go when it is assigned or revoked, and the next
  owner starts from Redis (after replaying any gap there, see :mod:`millrace_featurizer.live`);
- a failed transaction: the batch's changes were made in memory and never committed, so
  everything is dropped and read again.

>>> reads = []
>>> def read(entities):
...     reads.append(sorted(entities))
...     return {e: {} for e in entities}
>>> owned = OwnedState(read, max_entities=10)
>>> owned.load({"a": 0, "b": 1})["a"]["x"] = 1.0
>>> owned.load({"a": 0, "c": 1})["a"], reads
({'x': 1.0}, [['a', 'b'], ['c']])
>>> owned.drop_partitions([0])
>>> _ = owned.load({"a": 0}); reads[-1]
['a']
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from millrace.featurize import StateLoader

States = dict[str, dict[str, float]]


class OwnedState:
    """A read-through cache of entity states by source partition, at most ``max_entities``
    (the longest held leave first)."""

    def __init__(self, read: StateLoader, max_entities: int = 1_000_000) -> None:
        self._read = read
        self.max_entities = max_entities
        self._partitions: dict[int, States] = {}
        self._pinned: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return sum(len(states) for states in self._partitions.values())

    def load(self, entities: Mapping[str, int]) -> States:
        """The states of ``entities`` (entity -> partition), the missing ones read from Redis in
        one call. The caller changes them in place, as its batch goes."""
        found: States = {}
        missing: list[str] = []
        partitions = self._partitions
        for entity, partition in entities.items():
            owned = partitions.get(partition)
            state = owned.get(entity) if owned is not None else None
            if state is None:
                missing.append(entity)
            else:
                found[entity] = state
        if missing:
            for entity, state in self._read({e: entities[e] for e in missing}).items():
                found[entity] = state
                partitions.setdefault(entities[entity], {})[entity] = state
            self._bound()
        return found

    def pin(self, entities: Iterable[str]) -> None:
        """Keep these in memory whatever the bound (their changes are not in Redis yet: read
        from there, they would be stale); the next call replaces the set."""
        self._pinned = frozenset(entities)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)

    def clear(self) -> None:
        self._partitions.clear()

    def _bound(self) -> None:
        excess = len(self) - self.max_entities
        for states in self._partitions.values():
            if excess <= 0:
                return
            leaving = list(itertools.islice(states, excess + len(self._pinned)))
            for entity in leaving:
                if excess > 0 and entity not in self._pinned:
                    del states[entity]
                    excess -= 1
