from __future__ import annotations

import socket

from pydantic import Field

from millrace.settings import LOCAL_PORTS, HttpSettings


class FeaturizerSettings(HttpSettings):
    port: int = LOCAL_PORTS["featurizer"]
    group: str = "millrace-featurizer"
    # Events per Kafka transaction at most (a batch also ends after 0.2 s). A batch is
    # computed while the one before commits; measured on 60 days of flights, 10,000 gave 1.17x
    # the throughput of 5,000 (the commit hides behind the computing; 5,000 gave 1.3x 1,000).
    batch_size: int = Field(default=10_000, ge=1)
    partitions: int = 3
    # Each batch's entity states also go to the compacted state changelog, in its transaction,
    # so that Redis can be rebuilt whatever the events topic's retention. Off only to measure
    # its cost: a changelog turned off and on again must be deleted first (it would miss the
    # states written meanwhile).
    state_changelog: bool = True
    # A stable, unique id per replica: a restarted replica then fences the transaction its dead
    # predecessor left open instead of readers waiting for it to expire. The default, the host
    # name, is stable per Kubernetes StatefulSet pod (name-0, name-1), not per compose container
    # (its id): the compose file and the local stack set one per replica (featurizer-0, -1).
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    # How soon the group notices a dead replica and hands its partitions to another.
    session_timeout_ms: int = 10_000
    # No committed batch and no idle poll for this long: /health turns 503 and the process
    # exits non-zero, so that its supervisor restarts it.
    stall_timeout_s: float = Field(default=120.0, gt=0)
    # Each transactional call's timeout. send_offsets_to_transaction gets 3 s more, past which
    # the process exits (librdkafka may otherwise block in it for good, see Liveness.bounded).
    transaction_timeout_s: float = Field(default=5.0, gt=0)
    # How long the producer waits for a broker's answer before it sends again (librdkafka's
    # request.timeout.ms and socket.timeout.ms; their defaults are 30 and 60 s). A partition
    # leader cut off from the network holds the open transaction up this long before its
    # records go to the new leader: on the three-node cluster, a cut leader stalled the
    # pipeline 21 s with librdkafka's defaults and 11 s with 10 s.
    request_timeout_ms: int = Field(default=10_000, ge=1_000)
    # Entity states kept in memory between batches (of the partitions this replica owns); past
    # this many, the longest held are read from Redis again when next needed.
    max_cached_entities: int = Field(default=1_000_000, ge=0)
