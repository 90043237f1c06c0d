"""Online state: one Redis hash per entity, fenced by source partition and offset.

Layout (``<prefix>`` is the topic prefix)::

    <prefix>state:<entity>          hash    feature-state fields (floats, exact repr);
                                            ``__max_ts`` is the newest event time of the key
    <prefix>state:__fence__         hash    source partition -> last source offset applied
    <prefix>state:__schema__        string  "<module name>/v<version>" that wrote the state

The featurizer writes a batch's state only after its Kafka transaction committed, with one Lua
script per source partition that applies the batch's fields and moves that partition's fence
together, and only if the batch is newer than the fence. So a replay applies nothing twice, and
the gap a crash can leave (committed in Kafka, not yet in Redis) is visible as a fence behind
the committed offset: :meth:`LiveFeaturizer.recover` replays exactly that gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis

_APPLY_BATCH = """
local fence = redis.call('HGET', KEYS[1], ARGV[1])
if fence and tonumber(fence) >= tonumber(ARGV[2]) then return 0 end
local i = 3
for k = 2, #KEYS do
  local n = tonumber(ARGV[i])
  redis.call('HSET', KEYS[k], unpack(ARGV, i + 1, i + 2 * n))
  i = i + 1 + 2 * n
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class StateWrite:
    entity: str
    fields: dict[str, float]
    partition: int
    offset: int


class SchemaMismatch(RuntimeError):
    pass


class RedisState:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.fence_key = f"{prefix}state:__fence__"
        self._apply = client.register_script(_APPLY_BATCH)

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisState:
        client: redis.Redis = redis.Redis.from_url(url)
        return cls(client, prefix)

    def key(self, entity: str) -> str:
        return f"{self.prefix}state:{entity}"

    def claim_schema(self, marker: str) -> None:
        """Record which module writes this state; refuse to mix two modules' states."""
        key = f"{self.prefix}state:__schema__"
        self.client.set(key, marker, nx=True)
        found = _text(self.client.get(key) or b"")
        if found and found != marker:
            raise SchemaMismatch(
                f"Redis state under {self.prefix!r} was written by {found!r}, not "
                f"{marker!r}; use another MILLRACE_TOPIC_PREFIX or clear the old state"
            )

    def read(self, entity: str) -> dict[str, float]:
        return _decode(self.client.hgetall(self.key(entity)))

    def read_many(self, entities: Iterable[str]) -> dict[str, dict[str, float]]:
        names = list(dict.fromkeys(entities))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.key(name))
        return {n: _decode(raw) for n, raw in zip(names, pipe.execute(), strict=True)}

    def materialize(self, states: Mapping[str, Mapping[str, float]]) -> int:
        """Write whole entity states (a backfill's final state) without fences: for warming the
        state a predictor reads, not for a featurizer that will consume the same events."""
        pipe = self.client.pipeline(transaction=False)
        for entity, fields in states.items():
            if fields:
                pipe.hset(self.key(entity), mapping={k: repr(float(v)) for k, v in fields.items()})
        pipe.execute()
        return len(states)

    def fences(self) -> dict[int, int]:
        raw = self.client.hgetall(self.fence_key)
        return {int(_text(k)): int(_text(v)) for k, v in raw.items()}

    def apply(self, writes: Iterable[StateWrite], fences: Mapping[int, int]) -> int:
        """Apply one batch: for each partition in ``fences`` (partition -> last source offset of
        the batch), its writes and its fence move together, unless the fence is already there.
        Returns how many partitions were applied (the others were replays)."""
        by_partition: dict[int, dict[str, dict[str, float]]] = {p: {} for p in fences}
        for w in writes:
            by_partition[w.partition].setdefault(w.entity, {}).update(w.fields)
        pipe = self.client.pipeline(transaction=False)
        for partition, entities in by_partition.items():
            keys = [self.fence_key, *(self.key(e) for e in entities)]
            args: list[str | int] = [partition, fences[partition]]
            for fields in entities.values():
                args.append(len(fields))
                for name, value in fields.items():
                    args += [name, repr(float(value))]
            self._apply(keys=keys, args=args, client=pipe)
        return sum(pipe.execute()) if by_partition else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, float]:
    return {_text(k): float(v) for k, v in raw.items()}
