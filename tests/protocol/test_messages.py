from __future__ import annotations

import json
import time
import uuid

import pytest

from protocol import SCHEMA_VERSION
from protocol.errors import InvalidMessage
from protocol.messages import (
    ClassScore,
    InferenceResult,
    ResultBatch,
    Status,
    Telemetry,
    TensorDigest,
    decode,
    encode,
    new_id,
)


def _result(**kw: object) -> InferenceResult:
    base: dict[str, object] = dict(
        model="digits-edge",
        model_version="1.0.0",
        artifact_sha256="ab" * 32,
        backend="litert",
        latency_ms=0.4,
    )
    base.update(kw)
    return InferenceResult.model_validate(base)


def test_result_batch_round_trips_with_ids_and_version() -> None:
    batch = ResultBatch(
        device_id="d1",
        results=[
            _result(classes=[ClassScore(index=3, label="3", score=0.9)]),
            _result(
                outputs=[
                    TensorDigest(
                        name="o", shape=[1, 1000], datatype="FP32", sha256="0" * 64, size_bytes=4000
                    )
                ]
            ),
        ],
    )
    back = decode(ResultBatch, encode(batch))
    assert back == batch
    assert back.schema_version == SCHEMA_VERSION
    assert len({r.result_id for r in back.results}) == 2
    assert back.message_id and back.message_id != back.results[0].result_id


def test_readers_ignore_unknown_fields() -> None:
    payload = json.loads(encode(Status(device_id="d1", state="online")))
    payload["added_in_v2"] = {"anything": 1}
    assert decode(Status, json.dumps(payload)).state == "online"


def test_encode_leaves_out_unset_optionals() -> None:
    body = json.loads(encode(Telemetry(device_id="d", interval_s=10)))
    assert "temperature_c" not in body
    assert body["interval_s"] == 10


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b"not json", "payload"),
        (b'{"device_id": "a/b", "state": "online"}', "device_id"),
        (b'{"device_id": "d", "state": "sleeping"}', "state"),
    ],
)
def test_decode_names_the_problem(payload: bytes, where: str) -> None:
    with pytest.raises(InvalidMessage, match=where):
        decode(Status, payload)


def test_empty_batch_is_invalid() -> None:
    with pytest.raises(InvalidMessage, match="results"):
        decode(ResultBatch, b'{"device_id": "d", "results": []}')


def test_ids_are_time_ordered_uuid7() -> None:
    first = new_id()
    time.sleep(0.002)
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert first < min(ids), "ids made later sort later (across milliseconds)"
