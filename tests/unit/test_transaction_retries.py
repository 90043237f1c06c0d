"""Which transactional failures are called again and which propagate (librdkafka's error
classes, constructed: no client is involved)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from millrace import kafka
from millrace.kafka import retry_retriable


def failing(*errors: KafkaError) -> tuple[list[float], object]:
    calls: list[float] = []
    pending = list(errors)

    def call(seconds_left: float) -> None:
        calls.append(seconds_left)
        if pending:
            raise KafkaException(pending.pop(0))

    return calls, call


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "_RETRY_PAUSE_S", 0.001)


def test_a_retriable_error_is_called_again_with_the_time_left():
    timed_out = KafkaError(KafkaError._TIMED_OUT, "commit in progress", retriable=True)
    calls, call = failing(timed_out, timed_out)
    retry_retriable(call, "commit_transaction", 30)
    assert len(calls) == 3 and all(0 < left <= 30 for left in calls)
    assert calls == sorted(calls, reverse=True)


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "abortable", txn_requires_abort=True),
        KafkaError(KafkaError._FENCED, "fenced", fatal=True, retriable=True),
        KafkaError(KafkaError.CONCURRENT_TRANSACTIONS, "not retriable"),
    ],
)
def test_errors_needing_an_abort_or_fatal_propagate_at_once(error: KafkaError):
    calls, call = failing(error)
    with pytest.raises(KafkaException):
        retry_retriable(call, "send_offsets_to_transaction", 30)
    assert len(calls) == 1


def test_a_retriable_error_past_the_deadline_propagates():
    timed_out = KafkaError(KafkaError._TIMED_OUT, "still in progress", retriable=True)
    calls, call = failing(*[timed_out] * 1000)
    with pytest.raises(KafkaException):
        retry_retriable(call, "commit_transaction", 0.05)
    assert 1 <= len(calls) < 1000
