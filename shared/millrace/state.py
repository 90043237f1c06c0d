"""Online state: one Redis hash per entity, fenced by source partition and offset.

Layout (``<prefix>`` is the topic prefix)::

    <prefix>state:<entity>          hash    feature-state fields (floats, exact repr);
                                            ``__max_ts`` is the newest event time of the key
    <prefix>state:__fence__         hash    source partition -> last source offset applied
    <prefix>state:__schema__        string  "<module name>/v<version>" that wrote the state
    <prefix>state:__ready__         hash    the ready marks: source partition -> "<run id of
                                            the server>/<owner's token>" (a third part,
                                            "/rebuilding", while it is rebuilt), and
                                            ``__partitions__``: the events topic's partitions

On a Redis Cluster the entity hashes spread over the primaries by their own names, and each
primary holds its own copy of the ready marks, ``<prefix>state:__ready__:{<tag>}``, the tag
chosen to fall in one of its slots (see :mod:`millrace.state_nodes`).

Redis is a cache of Kafka's truth (the featurizer's state changelog, see
:mod:`millrace_featurizer.changelog`). The featurizer writes a batch's state only after its Kafka
transaction committed, in one script per server that applies a partition's fields only if that
server still shows this owner's mark for the partition, made by the same server process; the
server that holds the fence moves it last, and only if it is the one this owner left
(compare-and-set). A mark or fence that is not, Redis lost writes (a flush, a restart empty, a
failover to a replica that had not received them) or another owner took over: that partition is
reported lost, and the featurizer rebuilds it. Its reads of entity states are checked the same
way, in the same script.

Readers (the predictor) serve an entity only from a server whose marks say every partition is
complete, by the run id of that very server: a flush removes the marks; a restart or a failover
changes the run id; a featurizer rebuilding a partition marks it so until it is done.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, ClusterError, RedisClusterException
from redis.sentinel import Sentinel

from millrace.errors import MillraceError
from millrace.settings import CommonSettings, reveal
from millrace.state_nodes import Node, StateNodes
from millrace.waiting import wait_until

#: partition -> entity -> the fields the batch set (the latest value of each).
StateWrites = Mapping[int, Mapping[str, Mapping[str, float]]]
States = dict[str, dict[str, float]]
#: One partition's share of a batch on one server, for the apply script: [partition, expected
#: mark, expected fence, new fence, [[entity key, {field: value}], ...]].
_Part = list[Any]
#: Errors that mean Redis did not answer (down, failing over, loading its data, a cluster
#: reshaping itself).
UNREACHABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    ClusterDownError,
    ClusterError,
    RedisClusterException,
)

#: Errors that waiting does not cure: the password was refused (or none was given).
REFUSED = (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError)


class RedisRefused(MillraceError, RuntimeError):
    """Redis refused this process's password, or wanted one: waiting does not cure it."""

    def __init__(self, where: str, cause: BaseException) -> None:
        super().__init__(
            f"{where} refused the connection ({cause}): set its password in "
            "MILLRACE_REDIS_PASSWORD (or in MILLRACE_REDIS_URL for one Redis)"
        )


class StateIncomplete(MillraceError, RuntimeError):
    """The online state is not known complete (being rebuilt, lost, or never verified)."""


class StateLost(MillraceError, RuntimeError):
    """Redis no longer holds what this owner wrote for ``partitions``."""

    def __init__(self, partitions: Iterable[int], why: str) -> None:
        self.partitions = frozenset(partitions)
        super().__init__(f"the Redis state of partitions {sorted(self.partitions)} was lost: {why}")


class SchemaMismatch(MillraceError, RuntimeError):
    pass


class RedisState:
    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        prefix: str,
        where: str = "",
        setting: str = "MILLRACE_REDIS_URL",
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.fence_key = f"{prefix}state:__fence__"
        self._entity_at = len(self.key(""))
        #: Where the state lives, for messages: an address, a master behind sentinels, a cluster.
        self.where = where or _address(client)
        #: The setting that names it, for messages.
        self.setting = setting
        self.nodes = StateNodes(client, prefix, self.where)
        #: partition -> node -> the mark this owner (a featurizer) left there.
        self._marks: dict[int, dict[str, str]] = {}

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisState:
        client: redis.Redis = redis.Redis.from_url(url)
        return cls(client, prefix)

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> RedisState:
        """The state the settings name: ``redis_url``; or, when ``redis_sentinels`` is set, the
        master the sentinels name ``redis_master_name`` (followed across failovers); or, when
        ``redis_cluster_nodes`` is set, that Redis Cluster (waiting for it to answer)."""
        if settings.redis_sentinels and settings.redis_cluster_nodes:
            raise MillraceError(
                "MILLRACE_REDIS_SENTINELS and MILLRACE_REDIS_CLUSTER_NODES are both set: the "
                "state is on one Redis (behind sentinels) or on a cluster, not both"
            )
        password = reveal(settings.redis_password)
        if settings.redis_cluster_nodes:
            return cls._cluster(settings.redis_cluster_nodes, settings.topic_prefix, password)
        if not settings.redis_sentinels:
            return cls.from_url(settings.redis_url, settings.topic_prefix)
        sentinels = [_host_port(s) for s in settings.redis_sentinels]
        timeouts = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
        # redis-py types Sentinel from 8.x on; the ignores are for the releases before.
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            sentinels,
            sentinel_kwargs={**timeouts, "password": reveal(settings.redis_sentinel_password)},
            socket_timeout=timeouts["socket_timeout"],
            socket_connect_timeout=timeouts["socket_connect_timeout"],
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
            settings.redis_master_name,
            password=password,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            retry_on_timeout=True,
        )
        where = f"master {settings.redis_master_name!r} of sentinels " + ",".join(
            settings.redis_sentinels
        )
        return cls(client, settings.topic_prefix, where, "MILLRACE_REDIS_SENTINELS")

    @classmethod
    def _cluster(
        cls, addresses: list[str], prefix: str, password: str | None, timeout: float = 120.0
    ) -> RedisState:
        where = "Redis Cluster " + ",".join(addresses)
        startup = [ClusterNode(*_host_port(a)) for a in addresses]  # type: ignore[no-untyped-call]

        def connect() -> RedisCluster:
            try:
                return RedisCluster(
                    startup_nodes=startup,
                    password=password,
                    socket_timeout=5.0,
                    socket_connect_timeout=2.0,
                )
            except RedisClusterException as exc:  # it wraps the nodes' answer
                if isinstance(exc.__cause__, REFUSED):
                    raise RedisRefused(where, exc.__cause__) from exc
                raise

        client = wait_until(
            connect,
            timeout,
            where,
            errors=UNREACHABLE,
            fatal=(RedisRefused,),
            announce=f"waiting for {where} (set by MILLRACE_REDIS_CLUSTER_NODES)",
        )
        return cls(client, prefix, where, "MILLRACE_REDIS_CLUSTER_NODES")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until Redis answers a PING (saying so while it does not), or raise
        TimeoutError naming the address."""
        try:
            wait_until(
                self.client.ping,
                timeout,
                f"Redis at {self.where}",
                errors=UNREACHABLE,
                fatal=REFUSED,
                announce=f"waiting for Redis at {self.where} (set by {self.setting})",
            )
        except REFUSED as exc:
            raise RedisRefused(f"Redis at {self.where}", exc) from exc

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

    def read_many(self, entities: Iterable[str]) -> States:
        """Entity states as they are, unchecked (tools and tests; services read checked)."""
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

    def set_fence(self, partition: int, offset: int | None) -> None:
        if offset is None:
            self.client.hdel(self.fence_key, str(partition))
        else:
            self.client.hset(self.fence_key, str(partition), str(offset))

    def rebuild(self, states: Mapping[str, Mapping[str, float]], chunk: int = 1000) -> None:
        """Replace whole entity states (a rebuild from the changelog). Not atomic: the caller
        marks the partition as rebuilding first and moves its fence last."""
        items = list(states.items())
        for start in range(0, len(items), chunk):
            pipe = self.client.pipeline(transaction=False)
            for entity, fields in items[start : start + chunk]:
                pipe.delete(self.key(entity))
                if fields:
                    pipe.hset(self.key(entity), mapping={k: repr(v) for k, v in fields.items()})
            pipe.execute()

    # -- the owner's writes and reads, checked where they run --------------------------------

    def apply(
        self, writes: StateWrites, fences: Mapping[int, int], expected: Mapping[int, int | None]
    ) -> set[int]:
        """Apply one batch: for each partition in ``fences`` (partition -> last source offset
        of the batch), its writes, then its fence, if every server that holds some of them
        still shows this owner's mark and its fence is ``expected[partition]`` (None: no fence
        yet). Returns the partitions for which that was not so (Redis lost writes, or another
        owner took over): they are to be rebuilt."""
        if not fences:
            return set()
        nodes = self.nodes
        fence_node = nodes.node_of(self.fence_key)
        per_node: dict[Node, dict[int, _Part]] = defaultdict(dict)
        for partition, entities in writes.items():
            if partition not in fences or not entities:
                continue
            keys = {self.key(entity): fields for entity, fields in entities.items()}
            for node, on_node in nodes.group(keys).items():
                mark = self._mark(partition, node)
                writing = [[key, keys[key]] for key in on_node]
                per_node[node][partition] = [str(partition), mark, "", "", writing]
        lost: set[int] = set()
        for node, parts in per_node.items():
            if node != fence_node:
                lost |= self._apply_on(node, "", list(parts.values()))
        # The fence moves last, on its own server, for the partitions applied everywhere.
        last = per_node.get(fence_node, {})
        moving = []
        for partition, offset in fences.items():
            if partition in lost:
                continue
            part = last.get(partition) or [str(partition), "", "", "", []]
            before = expected.get(partition)
            part[1] = self._mark(partition, fence_node)
            part[2], part[3] = ("" if before is None else str(before)), str(offset)
            moving.append(part)
        return lost | self._apply_on(fence_node, self.fence_key, moving)

    def _apply_on(self, node: Node, fence_key: str, parts: list[_Part]) -> set[int]:
        if not parts:
            return set()
        args: list[str | bytes] = [self.nodes.marks_key(node), fence_key, orjson.dumps(parts)]
        found = self.nodes.on(node, lambda: self.nodes.apply(args=args, client=node.client))
        return {int(_text(p)) for p in found}

    def read_owned(self, entities: Mapping[str, int]) -> States:
        """The states of ``entities`` (entity -> partition), read where each is held together
        with that server's marks; raises :class:`StateLost` if a server no longer shows this
        owner's mark for the partition of an entity read there."""
        found: States = {}
        keys = [self.key(entity) for entity in entities]
        for node, on_node in self.nodes.group(keys).items():
            run_id, marks, raw = self._read_on(node, on_node)
            wrong = set()
            for key, fields in zip(on_node, raw, strict=True):
                entity = key[self._entity_at :]
                partition = entities[entity]
                if not self._shows(marks, run_id, partition, node):
                    wrong.add(partition)
                found[entity] = _decode(_pairs(fields))
            if wrong:
                raise StateLost(wrong, f"{node.name} (run {run_id}) no longer shows their marks")
        return found

    def verify(self) -> set[int]:
        """The partitions this owner holds whose marks some server no longer shows."""
        lost = set()
        for node in self.nodes.primaries():
            run_id, marks, _ = self._read_on(node, [])
            lost |= {p for p in self._marks if not self._shows(marks, run_id, p, node)}
        return lost

    def _shows(self, marks: Mapping[str, str], run_id: str, partition: int, node: Node) -> bool:
        """Whether ``node``'s marks, read with its ``run_id``, still vouch for what this owner
        wrote to ``partition`` there (the script's ``owned``)."""
        mine = self._mark(partition, node)
        return bool(mine) and marks.get(str(partition)) == mine and mine.startswith(run_id + "/")

    def _read_on(self, node: Node, keys: list[str]) -> tuple[str, dict[str, str], list[object]]:
        args = [self.nodes.marks_key(node), *keys]
        run_id, marks, *raw = self.nodes.on(
            node, lambda: self.nodes.read(args=args, client=node.client)
        )
        return _text(run_id), _pairs(marks), raw

    def _mark(self, partition: int, node: Node) -> str:
        return self._marks.get(partition, {}).get(node.name, "")

    # -- the ready marks ---------------------------------------------------------------------

    def adopt(self, partitions: Iterable[int], total: int) -> set[int]:
        """Take over ``partitions`` whose state the marks vouch for on every server (a complete
        mark made by that server's run); returns those for which some server's does not."""
        return self._set_marks(partitions, "@", "", total)

    def begin_rebuild(self, partitions: Iterable[int]) -> None:
        """Mark ``partitions`` as rebuilt by this owner, on every server (readers refuse them)."""
        self._set_marks(partitions, "*", "/rebuilding", None)

    def declare_ready(self, partitions: Iterable[int], total: int) -> set[int]:
        """Mark ``partitions`` complete (of ``total`` in the events topic) on every server that
        still shows this owner's mark (any server, for partitions this owner never marked);
        returns those for which some server did not."""
        return self._set_marks(partitions, None, "", total)

    def withdraw_ready(self, partitions: Iterable[int]) -> None:
        """Remove this owner's marks of ``partitions`` (a reader then refuses them) and forget
        them; another owner's marks stay."""
        names = [p for p in partitions if p in self._marks]
        if names:
            self._set_marks(names, None, None, None)

    def release(self, partitions: Iterable[int]) -> None:
        """Forget ``partitions`` (revoked at a committed batch): the next owner adopts them."""
        for partition in partitions:
            self._marks.pop(partition, None)

    def _set_marks(
        self, partitions: Iterable[int], expect: str | None, suffix: str | None, total: int | None
    ) -> set[int]:
        """The marks script on every server: ``expect`` None is this owner's mark (or any, if
        it has none), suffix None deletes (else the new mark is run id/token + suffix)."""
        wanted = sorted(set(partitions))
        if not wanted and total is None:
            return set()
        token = uuid.uuid4().hex[:16]
        failed: set[int] = set()
        made: dict[int, dict[str, str]] = {p: {} for p in wanted}
        for node in self.nodes.primaries():
            changes = []
            for partition in wanted:
                before = (
                    expect
                    or self._mark(partition, node)
                    or ("" if partition in self._marks else "*")
                )
                changes.append([str(partition), before, "" if suffix is None else token + suffix])
            run_id, refused = self._mark_on(node, "" if total is None else str(total), changes)
            failed |= {int(_text(p)) for p in refused}
            for partition in wanted:
                made[partition][node.name] = f"{_text(run_id)}/{token}{suffix or ''}"
        for partition in wanted:
            if suffix is None or partition in failed:
                self._marks.pop(partition, None)
            else:
                self._marks[partition] = made[partition]
        return failed

    def _mark_on(
        self, node: Node, total: str, changes: list[list[str]]
    ) -> tuple[bytes, list[bytes]]:
        args = [self.nodes.marks_key(node), total, orjson.dumps(changes).decode()]
        found = self.nodes.on(node, lambda: self.nodes.mark(args=args, client=node.client))
        return found[0], found[1]

    # -- the readers' check -------------------------------------------------------------------

    def read_complete(self, entities: Iterable[str]) -> States:
        """The states of ``entities``, each read with its server's ready marks in one script;
        raises :class:`StateIncomplete` saying why unless, on every server read, every
        partition is marked complete by that server's run (the predictor's read)."""
        keys = [self.key(entity) for entity in entities]
        groups = self.nodes.group(keys) if keys else {node: [] for node in self.nodes.primaries()}
        found: States = {}
        try:
            for node, on_node in groups.items():
                run_id, marks, raw = self._read_on(node, on_node)
                problem = _incompleteness(marks, run_id)
                if problem is not None:
                    raise StateIncomplete(problem)
                for key, fields in zip(on_node, raw, strict=True):
                    found[key[self._entity_at :]] = _decode(_pairs(fields))
        except UNREACHABLE as exc:
            raise StateIncomplete(
                f"the online state is unreachable at {self.where}: {exc}"
            ) from exc
        return found

    def completeness(self) -> str | None:
        """None when every server marks every partition complete, else why not."""
        try:
            self.read_complete(())
        except StateIncomplete as exc:
            return str(exc)
        return None


def _incompleteness(marks: Mapping[str, str], run_id: str) -> str | None:
    total = marks.get("__partitions__")
    if total is None:
        return (
            "the online state is not verified: no featurizer has marked it complete on this "
            "Redis (it was flushed, restarted empty, or no featurizer ran yet)"
        )
    parts = {p: marks.get(str(p), "").split("/") for p in range(int(total))}
    rebuilding = [p for p, mark in parts.items() if len(mark) != 2]
    if rebuilding:
        return f"the online state of partitions {rebuilding} is being rebuilt"
    stale = [p for p, mark in parts.items() if mark[0] != run_id]
    if stale:
        return (
            f"the online state of partitions {stale} is not verified on this Redis server yet "
            "(it restarted or failed over)"
        )
    return None


def _address(client: redis.Redis | RedisCluster) -> str:
    if isinstance(client, RedisCluster):
        return "Redis Cluster " + ",".join(n.name for n in client.get_nodes())  # type: ignore[no-untyped-call]
    kwargs = client.connection_pool.connection_kwargs
    return str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: object) -> dict[str, str]:
    """A flat [field, value, ...] reply (HGETALL inside a script) as a dict."""
    assert isinstance(flat, list)
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _decode(raw: Mapping[Any, Any]) -> dict[str, float]:
    return {_text(k): float(v) for k, v in raw.items()}
