"""Where the online state's keys live, and the scripts that run where they live.

The state is on one Redis server (a URL, or the master the sentinels name) or on the primaries
of a Redis Cluster. Either way every atomic step is one script on one server over the keys that
server holds: Redis 7's ``allow-cross-slot-keys`` flag lets a script touch keys of several hash
slots of its own node (never of another), so entity keys need no hash tag and a reader finds an
entity's key from its name alone. A single server is a cluster of one node.

Each node holds its own copy of the ready marks (see :mod:`millrace.state`), in a key hash-tagged
into one of that node's slots: a node flushed, restarted or failed over loses or disowns exactly
the marks that vouch for the keys it holds, and a script checks them in the same atomic step as
its reads or writes, with the run id of the server it runs on.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

from millrace.errors import MillraceError

_T = TypeVar("_T")

_HEAD = """#!lua flags=allow-cross-slot-keys
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
-- A mark this owner wrote on this very server: what it expects, and made by this run id.
local function owned(value, expected)
  return value == expected and string.sub(expected, 1, #run_id + 1) == run_id .. '/'
end
"""

# ARGV[1]: the marks hash, ARGV[2...]: entity hashes. Returns {run id, marks, each entity's}.
READ = (
    _HEAD
    + """
local out = {run_id, redis.call('HGETALL', ARGV[1])}
for i = 2, #ARGV do out[#out + 1] = redis.call('HGETALL', ARGV[i]) end
return out
"""
)

# ARGV[1]: the marks hash; ARGV[2]: the fence hash ('' when it is on another node); ARGV[3]: a
# JSON array of [partition, expected mark, expected fence ('' = none), new fence,
# [[entity key, {field: value}], ...]]. A partition is applied (its writes, and its fence when
# the fence is here) only if its mark is this owner's on this server and its fence the expected
# one. Values travel as JSON numbers and are stored with 17 significant digits: read back, they
# are the same doubles. Returns the partitions not applied.
APPLY = (
    _HEAD
    + """
local batch = cjson.decode(ARGV[3])
local lost = {}
for _, part in ipairs(batch) do
  local intact = owned(redis.call('HGET', ARGV[1], part[1]), part[2])
  if intact and ARGV[2] ~= '' then
    local fence = redis.call('HGET', ARGV[2], part[1])
    if part[3] == '' then intact = not fence else intact = fence == part[3] end
  end
  if intact then
    for _, write in ipairs(part[5]) do
      local args = {}
      for name, value in pairs(write[2]) do
        args[#args + 1] = name
        args[#args + 1] = value
      end
      if #args > 0 then redis.call('HSET', write[1], unpack(args)) end
    end
    if ARGV[2] ~= '' then redis.call('HSET', ARGV[2], part[1], part[4]) end
  else
    lost[#lost + 1] = part[1]
  end
end
return lost
"""
)

# ARGV[1]: the marks hash; ARGV[2]: the partition count ('' = leave it); ARGV[3]: a JSON array of
# [partition, expected, suffix]: expected '*' is any mark, '@' a complete mark of this server,
# else this owner's exact mark; the new mark is "<run id>/<suffix>" ('' deletes it). Returns
# {run id, the partitions whose mark was not as expected (left as they were)}.
MARK = (
    _HEAD
    + """
if ARGV[2] ~= '' then redis.call('HSET', ARGV[1], '__partitions__', ARGV[2]) end
local failed = {}
for _, change in ipairs(cjson.decode(ARGV[3])) do
  local value = redis.call('HGET', ARGV[1], change[1])
  local ok
  if change[2] == '*' then ok = true
  elseif change[2] == '@' then
    ok = value and string.match(value, '^' .. run_id .. '/[^/]+$') ~= nil
  else ok = owned(value, change[2]) end
  if not ok then failed[#failed + 1] = change[1]
  elseif change[3] == '' then redis.call('HDEL', ARGV[1], change[1])
  else redis.call('HSET', ARGV[1], change[1], run_id .. '/' .. change[3]) end
end
return {run_id, failed}
"""
)


class TopologyChanged(MillraceError, redis.ConnectionError):
    """A cluster node no longer serves a key it served (slots moved, a primary failed over)."""


@dataclass(frozen=True)
class Node:
    name: str
    client: redis.Redis = field(compare=False)


class StateNodes:
    """The servers that hold the state: one, or a Redis Cluster's primaries."""

    def __init__(self, client: redis.Redis | RedisCluster, prefix: str, where: str) -> None:
        self.client = client
        self.prefix = prefix
        self.where = where
        self.cluster = client if isinstance(client, RedisCluster) else None
        self._marks_keys: dict[str, str] = {}
        registered = client.register_script  # a Script runs on whatever client it is given
        self.read: Script = registered(READ)
        self.apply: Script = registered(APPLY)
        self.mark: Script = registered(MARK)

    def primaries(self) -> list[Node]:
        if self.cluster is None:
            assert isinstance(self.client, redis.Redis)
            return [Node(self.where, self.client)]
        return [self._node(n) for n in self.cluster.get_primaries()]  # type: ignore[no-untyped-call]

    def group(self, keys: Iterable[str]) -> dict[Node, list[str]]:
        """``keys`` by the node that holds them (in order, without repeats)."""
        if self.cluster is None:
            return {self.primaries()[0]: list(dict.fromkeys(keys))}
        found: dict[Node, list[str]] = defaultdict(list)
        for key in dict.fromkeys(keys):
            found[self._holder(key)].append(key)
        return found

    def node_of(self, key: str) -> Node:
        return next(iter(self.group([key])))

    def marks_key(self, node: Node) -> str:
        """The key of ``node``'s copy of the ready marks: in one of its own slots."""
        if self.cluster is None:
            return f"{self.prefix}state:__ready__"
        key = self._marks_keys.get(node.name)
        if key is None:
            tag = 0
            while True:
                key = f"{self.prefix}state:__ready__:{{{tag}}}"
                if self._holder(key).name == node.name:
                    break
                tag += 1
            self._marks_keys[node.name] = key
        return key

    def on(self, node: Node, call: Callable[[], _T]) -> _T:
        """``call()`` against ``node``; a cluster that moved keys away from it is re-read and
        the call fails as :class:`TopologyChanged` (the caller checks again from the start)."""
        try:
            return call()
        except redis.ResponseError as exc:
            if self.cluster is None or not _moved(exc):
                raise
            self._forget_topology()
            raise TopologyChanged(f"the Redis Cluster changed under {node.name}: {exc}") from exc
        except redis.ConnectionError:
            if self.cluster is not None:
                self._forget_topology()
            raise

    def _forget_topology(self) -> None:
        assert self.cluster is not None
        self._marks_keys.clear()
        # The next call tries again; until then the state is unreachable.
        with contextlib.suppress(redis.RedisError, IndexError):
            self.cluster.nodes_manager.initialize()

    def _holder(self, key: str) -> Node:
        assert self.cluster is not None
        return self._node(self.cluster.get_node_from_key(key))  # type: ignore[no-untyped-call]

    def _node(self, node: Any) -> Node:
        assert self.cluster is not None
        return Node(node.name, self.cluster.get_redis_connection(node))


def _moved(exc: redis.ResponseError) -> bool:
    text = str(exc)
    return any(
        word in text for word in ("MOVED", "ASK", "non local key", "CLUSTERDOWN", "TRYAGAIN")
    )
