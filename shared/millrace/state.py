"""Online state: one Redis hash per entity, fenced by source partition and offset.

Layout (``<prefix>`` is the topic prefix)::

    <prefix>state:<entity>          hash    feature-state fields (floats, exact repr);
                                            ``__max_ts`` is the newest event time of the key
    <prefix>state:__fence__         hash    source partition -> last source offset applied
    <prefix>state:__schema__        string  "<module name>/v<version>" that wrote the state

The featurizer writes a batch's state only after its Kafka transaction committed, in one script
call that, for each source partition of the batch, applies that partition's fields and moves its
fence together, and only if the batch is newer than the fence. So a replay applies nothing twice,
and the gap a crash can leave (committed in Kafka, not yet in Redis) is visible as a fence behind
the committed offset: :meth:`LiveFeaturizer.recover` replays exactly that gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson
import redis

from millrace.errors import MillraceError
from millrace.waiting import wait_until

# KEYS: the fence hash, then each entity's hash in the order of ARGV[1], a JSON array of
# [partition, last offset, [{field: value}, ...]]. Values travel as JSON numbers and are stored
# with 17 significant digits: read back, they are the same doubles.
_APPLY_BATCH = """
local batch = cjson.decode(ARGV[1])
local k = 2
local applied = 0
for _, part in ipairs(batch) do
  local fence = redis.call('HGET', KEYS[1], part[1])
  local fresh = not fence or tonumber(fence) < tonumber(part[2])
  for _, fields in ipairs(part[3]) do
    if fresh then
      local args = {}
      for name, value in pairs(fields) do
        args[#args + 1] = name
        args[#args + 1] = value
      end
      if #args > 0 then redis.call('HSET', KEYS[k], unpack(args)) end
    end
    k = k + 1
  end
  if fresh then
    redis.call('HSET', KEYS[1], part[1], part[2])
    applied = applied + 1
  end
end
return applied
"""

#: partition -> entity -> the fields the batch set (the latest value of each).
StateWrites = Mapping[int, Mapping[str, Mapping[str, float]]]


class SchemaMismatch(MillraceError, RuntimeError):
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

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until Redis answers a PING (saying so while it does not), or raise
        TimeoutError naming the address."""
        kwargs = self.client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        wait_until(
            self.client.ping,
            timeout,
            f"Redis at {where}",
            errors=(redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError),
            announce=f"waiting for Redis at {where} (set by MILLRACE_REDIS_URL)",
        )

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

    def apply(self, writes: StateWrites, fences: Mapping[int, int]) -> int:
        """Apply one batch in one call: for each partition in ``fences`` (partition -> last
        source offset of the batch), its writes and its fence move together, unless the fence
        is already there. Returns how many partitions were applied (the others were replays)."""
        if not fences:
            return 0
        keys = [self.fence_key]
        batch = []
        for partition, offset in fences.items():
            entities = writes.get(partition, {})
            keys += [self.key(entity) for entity in entities]
            batch.append((str(partition), str(offset), list(entities.values())))
        return int(self._apply(keys=keys, args=[orjson.dumps(batch)]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, float]:
    return {_text(k): float(v) for k, v in raw.items()}
