"""The compiled join reads records exactly as the trainer's msgspec decoders do: the same
records refused, the same values to the bit, and the hashed learner's weights as its encoding
of the decoded dicts makes them, zlib's CRC-32 of each name (pure logic, no Kafka)."""

from __future__ import annotations

import random
import struct
import zlib

import msgspec
import numpy as np
import pytest

from millrace.learners import LogisticRegression
from millrace.records import decode_features, decode_label
from millrace_trainer.batching import Samples, WindowedJoin, encode_batches

HOUR = 3_600_000


def join() -> WindowedJoin:
    join = WindowedJoin(
        window_ms=HOUR, label_wait_ms=0, batch_samples=None, idle_ms=None, max_waiting=None
    )
    join.assign({"f/0", "l/0"})
    return join


FEATURES = [
    b'{"id":"a","key":"k","ts":1,"features":{"x":1.5}}',
    b'{"id":"a","key":"k","ts":1,"features":{"x":1}}',  # an int is a float
    b'{"id":"a","key":"k","ts":1,"features":{}}',
    b'{"id":"a","key":"k","ts":1,"features":{"x":1.0},"more":[1,{"y":null}]}',  # unknown field
    b'{"id":"a","key":"k","ts":1,"features":{"x":1.0},"event_id":"e","schema":"s"}',
    b'{"id":"\\u00e9\\n","key":"k","ts":1,"features":{"\\u00e9":2.0}}',  # escapes
    b'{"id":"a","key":"k","ts":1.0,"features":{"x":1.0}}',  # a float is not an int
    b'{"id":"a","ts":1,"features":{"x":1.0}}',  # no key
    b'{"id":"a","key":"k","ts":1,"features":{"x":true}}',
    b'{"id":"a","key":"k","ts":1,"features":{"x":null}}',
    b'{"id":"a","key":"k","ts":1,"features":[1.0]}',
    b'{"id":"a","key":"k","ts":1,"features":{"x":1.0},"event_id":null}',
    b'{"id":7,"key":"k","ts":1,"features":{"x":1.0}}',
    b'{"id":"a","key":"k","ts":1,"features":{"x":1.0}',  # broken
    b"",
    b"[]",
]
LABELS = [
    b'{"id":"a","key":"k","ts":1,"label":1.0}',
    b'{"id":"a","key":"k","ts":1,"label":0}',
    b'{"id":"a","key":"k","ts":1,"label":"1"}',
    b'{"id":"a","key":"k","ts":1}',
    b'{"id":"a","key":"k","ts":"1","label":1.0}',
    b"null",
]


def msgspec_accepts(decode: object, raw: bytes) -> bool:
    try:
        decode(raw)  # type: ignore[operator]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return True


@pytest.mark.parametrize("raw", FEATURES)
def test_a_feature_record_is_refused_exactly_when_msgspec_refuses_it(raw: bytes) -> None:
    refused = join().core.add_record(True, raw, "f/0", 0)
    assert (refused is None) == msgspec_accepts(decode_features, raw), refused


@pytest.mark.parametrize("raw", LABELS)
def test_a_label_is_refused_exactly_when_msgspec_refuses_it(raw: bytes) -> None:
    refused = join().core.add_record(False, raw, "l/0", 0)
    assert (refused is None) == msgspec_accepts(decode_label, raw), refused


def test_values_weights_and_names_are_the_decoders_to_the_bit() -> None:
    """Random doubles in their shortest form (where a fast float parser is off by one unit in
    the last place), names with escapes, a name given twice: what the learner's own encoding of
    msgspec's dicts makes, and each sample's features as msgspec decodes them."""
    rng = random.Random(3)
    j, records = join(), []
    for i in range(2000):
        bits = rng.getrandbits(64) & ~(0x7FF << 52) | (rng.randrange(900, 1150) << 52)
        value = struct.unpack("<d", struct.pack("<Q", bits))[0]
        names = [f"n{rng.randrange(50)}", "carrier=\\u00e9", f"x{i % 7}"]
        body = ",".join(
            f'"{n}":{v!r}' for n, v in zip(names, (value, -value / 3, 1e-300), strict=True)
        )
        if i % 100 == 0:
            body += f',"{names[0]}":{value * 2!r}'  # given twice: the last value, first place
        raw = f'{{"id":"s{i}","key":"k","ts":{i},"features":{{{body}}}}}'.encode()
        records.append(decode_features(raw))
        assert j.core.add_record(True, raw, "f/0", i) is None
        assert (
            j.core.add_record(
                False, f'{{"id":"s{i}","key":"k","ts":{i},"label":1}}'.encode(), "l/0", i
            )
            is None
        )
    j.core.add_record(
        False, f'{{"id":"end","key":"k","ts":{5 * HOUR},"label":1}}'.encode(), "l/0", 9999
    )
    j.core.add_record(
        True, f'{{"id":"end2","key":"k","ts":{5 * HOUR},"features":{{}}}}'.encode(), "f/0", 9999
    )
    (batch,) = j.ready()
    assert isinstance(batch.samples, Samples) and len(batch.samples) == len(records)
    model = LogisticRegression(dim_log2=18)
    compiled, y = encode_batches(model, [batch.samples])
    expected = model.encode_many([r.features for r in records])
    for field in ("cols", "values", "indptr", "rows"):
        assert np.array_equal(getattr(compiled, field), getattr(expected, field)), field
    assert compiled.values.tobytes() == expected.values.tobytes()
    # Both are zlib's CRC-32 of the name's UTF-8, masked: the weights of every release.
    crc = [zlib.crc32(n.encode()) & model.mask for r in records for n in r.features]
    assert expected.cols.tolist() == crc
    assert y.tolist() == [1.0] * len(records)
    assert [s.features for s in batch.samples] == [r.features for r in records]
    assert zlib.crc32("carrier=é".encode()) & model.mask in compiled.cols
