"""Online state: one Redis hash per entity, fenced by source partition and offset.

Layout (``<prefix>`` is the topic prefix)::

    <prefix>state:<entity>   hash  feature-state fields (floats, exact repr)
                                   + "__fence:<partition>" = last applied source offset
    <prefix>state:__schema__ string  "<module name>/v<version>" that wrote the state

A write carries the partition and offset of the event that caused it and is applied by one Lua
script only if that offset is newer than the fence, so replaying events after a crash applies
nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis

FENCE_PREFIX = "__fence:"

_FENCED_HSET = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], unpack(ARGV, 3))
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
        self._script = client.register_script(_FENCED_HSET)

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

    def write_many(self, writes: Iterable[StateWrite]) -> int:
        """Apply fenced writes; returns how many were applied (the rest were replays)."""
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for w in writes:
            args: list[str | int] = [f"{FENCE_PREFIX}{w.partition}", w.offset]
            for name, value in w.fields.items():
                args += [name, repr(float(value))]
            self._script(keys=[self.key(w.entity)], args=args, client=pipe)
            count += 1
        return sum(pipe.execute()) if count else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, float]:
    fields = ((_text(k), v) for k, v in raw.items())
    return {k: float(v) for k, v in fields if not k.startswith(FENCE_PREFIX)}
