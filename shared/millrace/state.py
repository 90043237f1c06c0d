"""Online state: one Redis hash per entity, fenced by source partition and offset.

Layout (``<prefix>`` is the topic prefix)::

    <prefix>state:<entity>          hash    feature-state fields (floats, exact repr);
                                            ``__max_ts`` is the newest event time of the key
    <prefix>state:__fence__         hash    source partition -> last source offset applied
    <prefix>state:__schema__        string  "<module name>/v<version>" that wrote the state
    <prefix>state:__ready__         hash    source partition -> the run id of the Redis server
                                            on which a featurizer found it complete
    <prefix>state:__partitions__    string  how many partitions the events topic has

Redis is a cache of Kafka's truth (the featurizer's state changelog, see
:mod:`millrace_featurizer.changelog`). The featurizer writes a batch's state only after its Kafka
transaction committed, in one script call that, for each source partition of the batch, applies
that partition's fields and moves its fence together, and only if the fence is the one this
featurizer last left there (compare-and-set). A fence that is not, Redis lost writes (a flush, a
restart empty, a failover to a replica that had not received them): that partition is reported
lost, nothing is applied to it, and the featurizer rebuilds it.

Readers (the predictor) serve only from state known complete: every partition marked ready, by
the run id of the server they are reading. A flush removes the marks; a restart or a failover
changes the run id; a featurizer that finds a partition lost withdraws its mark until the rebuild
is done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import orjson
import redis
from redis.sentinel import Sentinel

from millrace.errors import MillraceError
from millrace.settings import CommonSettings
from millrace.waiting import wait_until

# KEYS: the fence hash, then each entity's hash in the order of ARGV[1], a JSON array of
# [partition, expected fence ("" = none), new fence, [{field: value}, ...]]. Values travel as
# JSON numbers and are stored with 17 significant digits: read back, they are the same doubles.
# Returns the partitions whose fence was not the expected one (nothing applied for them).
_APPLY_BATCH = """
local batch = cjson.decode(ARGV[1])
local k = 2
local lost = {}
for _, part in ipairs(batch) do
  local fence = redis.call('HGET', KEYS[1], part[1])
  local intact
  if part[2] == '' then intact = not fence else intact = fence == part[2] end
  for _, fields in ipairs(part[4]) do
    if intact then
      local args = {}
      for name, value in pairs(fields) do
        args[#args + 1] = name
        args[#args + 1] = value
      end
      if #args > 0 then redis.call('HSET', KEYS[k], unpack(args)) end
    end
    k = k + 1
  end
  if intact then
    redis.call('HSET', KEYS[1], part[1], part[3])
  else
    lost[#lost + 1] = part[1]
  end
end
return lost
"""

#: partition -> entity -> the fields the batch set (the latest value of each).
StateWrites = Mapping[int, Mapping[str, Mapping[str, float]]]
States = dict[str, dict[str, float]]
#: Errors that mean Redis did not answer (down, failing over, loading its data).
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class StateIncomplete(MillraceError, RuntimeError):
    """The online state is not known complete (being rebuilt, lost, or never verified)."""


class SchemaMismatch(MillraceError, RuntimeError):
    pass


class RedisState:
    def __init__(
        self, client: redis.Redis, prefix: str, where: str = "", setting: str = "MILLRACE_REDIS_URL"
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.fence_key = f"{prefix}state:__fence__"
        self.ready_key = f"{prefix}state:__ready__"
        self.partitions_key = f"{prefix}state:__partitions__"
        #: Where the state lives, for messages: an address, or a master behind sentinels.
        self.where = where or _address(client)
        #: The setting that names it, for messages.
        self.setting = setting
        self._apply = client.register_script(_APPLY_BATCH)
        #: (the server's run id, when it was read): re-read after a second or an error.
        self._server: tuple[str, float] | None = None

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisState:
        client: redis.Redis = redis.Redis.from_url(url)
        return cls(client, prefix)

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> RedisState:
        """The state the settings name: ``redis_url``, or, when ``redis_sentinels`` is set, the
        master the sentinels name ``redis_master_name`` (followed across failovers)."""
        if not settings.redis_sentinels:
            return cls.from_url(settings.redis_url, settings.topic_prefix)
        sentinels = [_host_port(s) for s in settings.redis_sentinels]
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            settings.redis_master_name,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            retry_on_timeout=True,
        )
        where = f"master {settings.redis_master_name!r} of sentinels " + ",".join(
            settings.redis_sentinels
        )
        return cls(client, settings.topic_prefix, where, "MILLRACE_REDIS_SENTINELS")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until Redis answers a PING (saying so while it does not), or raise
        TimeoutError naming the address."""
        wait_until(
            self.client.ping,
            timeout,
            f"Redis at {self.where}",
            errors=UNREACHABLE,
            announce=f"waiting for Redis at {self.where} (set by {self.setting})",
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

    def materialize(self, states: Mapping[str, Mapping[str, float]], partitions: int) -> int:
        """Write whole entity states (a backfill's final state) without fences, and mark the
        state complete for ``partitions`` partitions: for warming the state a predictor reads,
        not for a featurizer that will consume the same events."""
        pipe = self.client.pipeline(transaction=False)
        for entity, fields in states.items():
            if fields:
                pipe.hset(self.key(entity), mapping={k: repr(float(v)) for k, v in fields.items()})
        pipe.execute()
        self.declare_ready(range(partitions), partitions)
        return len(states)

    def fences(self) -> dict[int, int]:
        raw = self.client.hgetall(self.fence_key)
        return {int(_text(k)): int(_text(v)) for k, v in raw.items()}

    def apply(
        self, writes: StateWrites, fences: Mapping[int, int], expected: Mapping[int, int | None]
    ) -> set[int]:
        """Apply one batch in one call: for each partition in ``fences`` (partition -> last
        source offset of the batch), its writes and its fence move together, if its fence is
        ``expected[partition]`` (None: no fence yet). Returns the partitions whose fence was not
        (Redis lost writes): nothing of theirs was applied."""
        if not fences:
            return set()
        keys = [self.fence_key]
        batch = []
        for partition, offset in fences.items():
            entities = writes.get(partition, {})
            keys += [self.key(entity) for entity in entities]
            before = expected.get(partition)
            batch.append(
                (
                    str(partition),
                    "" if before is None else str(before),
                    str(offset),
                    list(entities.values()),
                )
            )
        lost = self._apply(keys=keys, args=[orjson.dumps(batch)])
        return {int(_text(p)) for p in lost}

    def rebuild(self, states: Mapping[str, Mapping[str, float]], chunk: int = 1000) -> None:
        """Replace whole entity states (a rebuild from the changelog). Not atomic: the caller
        withdraws the partition's ready mark first and moves its fence last."""
        items = list(states.items())
        for start in range(0, len(items), chunk):
            pipe = self.client.pipeline(transaction=False)
            for entity, fields in items[start : start + chunk]:
                pipe.delete(self.key(entity))
                if fields:
                    pipe.hset(self.key(entity), mapping={k: repr(v) for k, v in fields.items()})
            pipe.execute()

    def set_fence(self, partition: int, offset: int | None) -> None:
        if offset is None:
            self.client.hdel(self.fence_key, str(partition))
        else:
            self.client.hset(self.fence_key, str(partition), str(offset))

    # -- completeness ------------------------------------------------------------------------

    def server_id(self, max_age_s: float = 1.0) -> str:
        """The run id of the server answering now (a restart or a failover changes it)."""
        now = time.monotonic()
        if self._server is None or now - self._server[1] > max_age_s:
            self._server = (str(self.client.info("server")["run_id"]), now)
        return self._server[0]

    def forget_server(self) -> None:
        """After an error: the next check asks the server its run id again."""
        self._server = None

    def declare_ready(self, partitions: Iterable[int], total: int) -> None:
        """Mark ``partitions`` complete on this server (of ``total`` in the events topic)."""
        run_id = self.server_id(max_age_s=0.0)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.partitions_key, str(total))
        for partition in partitions:
            pipe.hset(self.ready_key, str(partition), run_id)
        pipe.execute()

    def ready_marks(self) -> dict[int, str]:
        """partition -> the run id of the server on which it was marked complete."""
        raw = self.client.hgetall(self.ready_key)
        return {int(_text(p)): _text(run_id) for p, run_id in raw.items()}

    def withdraw_ready(self, partitions: Iterable[int]) -> None:
        names = [str(p) for p in partitions]
        if names:
            self.client.hdel(self.ready_key, *names)

    def read_complete(self, entities: Iterable[str]) -> States:
        """The states of ``entities``, read with the ready marks in one round trip; raises
        :class:`StateIncomplete` saying why unless every partition is marked complete on the
        server answering (the predictor's read)."""
        names = list(dict.fromkeys(entities))
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.partitions_key)
        pipe.hgetall(self.ready_key)
        for name in names:
            pipe.hgetall(self.key(name))
        try:
            total, ready, *raw = pipe.execute()
            server = self.server_id()
        except UNREACHABLE as exc:
            self.forget_server()
            raise StateIncomplete(
                f"the online state is unreachable at {self.where}: {exc}"
            ) from exc
        problem = _incompleteness(total, ready, server)
        if problem is not None:
            raise StateIncomplete(problem)
        return {n: _decode(r) for n, r in zip(names, raw, strict=True)}

    def completeness(self) -> str | None:
        """None when every partition is marked complete on the server answering, else why not."""
        try:
            self.read_complete(())
        except StateIncomplete as exc:
            return str(exc)
        return None


def _incompleteness(
    total: bytes | str | None, ready: Mapping[bytes | str, bytes | str], server: str
) -> str | None:
    if total is None:
        return (
            "the online state is not verified: no featurizer has marked it complete on this "
            "Redis (it was flushed, restarted empty, or no featurizer ran yet)"
        )
    marks = {int(_text(p)): _text(run_id) for p, run_id in ready.items()}
    missing = [p for p in range(int(_text(total))) if p not in marks]
    if missing:
        return f"the online state of partitions {missing} is being rebuilt"
    stale = [p for p, run_id in sorted(marks.items()) if run_id != server]
    if stale:
        return (
            f"the online state of partitions {stale} is not verified on this Redis server yet "
            "(it restarted or failed over)"
        )
    return None


def _address(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, float]:
    return {_text(k): float(v) for k, v in raw.items()}
