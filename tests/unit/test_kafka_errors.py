"""How the library classes Kafka client errors: which a loop logs and which end it."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from millrace.errors import ServiceFailed
from millrace.kafka import outcome_unknown, raise_if_consumer_failed, replaceable


def test_a_fatal_consumer_error_ends_the_loop_and_others_are_logged():
    fenced = KafkaError(
        KafkaError._FATAL,
        "Static consumer fenced by other consumer with same group.instance.id",
        fatal=True,
    )
    with pytest.raises(ServiceFailed, match="fatal Kafka consumer error: Static consumer fenced"):
        raise_if_consumer_failed(fenced)
    with pytest.raises(ServiceFailed):  # as a message's error carries it: the code alone
        raise_if_consumer_failed(KafkaError(KafkaError._FATAL, "Fatal error: fenced"))
    raise_if_consumer_failed(KafkaError(KafkaError._TRANSPORT, "broker down"))
    raise_if_consumer_failed(KafkaError(KafkaError._PARTITION_EOF, "end"))


def test_commit_errors_are_unknown_abortable_replaceable_or_fences():
    timed_out = KafkaException(
        KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True)
    )
    abortable = KafkaException(KafkaError(KafkaError._STATE, "abort it", txn_requires_abort=True))
    epoch = KafkaException(KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, "epoch", fatal=True))
    fenced = KafkaException(KafkaError(KafkaError.PRODUCER_FENCED, "fenced", fatal=True))
    assert outcome_unknown(timed_out) and not replaceable(timed_out)
    assert not outcome_unknown(abortable) and not replaceable(abortable)
    assert replaceable(epoch) and not outcome_unknown(epoch)
    assert not replaceable(fenced) and not replaceable(BufferError())
