"""The queue message contract: what the exporter writes, what the consumer accepts."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from shared.domain.requests import RemediationRequest, decode
from shared.domain.rules import parse_rules
from shared.domain.status_messages import StatusMessage
from shared.errors import QueueMessageError
from tests.helpers import rule, rules_text
from tests.remediation.conftest import FIXTURES, body_of

RULES = parse_rules(rules_text(rule()))


def request_for(
    machine="PC01", strings=("MsgType_Office365Upgrade", "projectInstalled"), resource_id=None
):
    padded = tuple(strings) + (None,) * (10 - len(strings))
    message = StatusMessage(
        "PS1", 2**56 + 7, 39997, datetime(2026, 11, 2, 9, 30), machine, padded, resource_id
    )
    return RemediationRequest.for_match(
        message, RULES.rules[0], exported_utc=datetime(2026, 11, 2, 9, 35, tzinfo=UTC)
    )


def test_round_trip_keeps_every_field():
    request = request_for()
    assert decode(request.to_json()) == request
    document = json.loads(request.to_json())
    assert document == {
        "schema_version": 1,
        "site_code": "PS1",
        "record_id": 2**56 + 7,
        "message_id": 39997,
        "time_utc": "2026-11-02T09:30:00Z",
        "machine_name": "PC01",
        "insertion_strings": {
            "InsertionString1": "MsgType_Office365Upgrade",
            "InsertionString2": "projectInstalled",
        },
        "rule": "project-64bit-reinstall",
        "collection_id": "PS100123",
        "action": "add",
        "target": "adminservice",
        "exported_utc": "2026-11-02T09:35:00Z",
    }


def test_a_resource_id_the_message_carried_travels_with_it():
    request = request_for(resource_id=16777219)
    document = json.loads(request.to_json())
    assert document["message_resource_id"] == 16777219
    assert decode(request.to_json()) == request
    # without one, the key is absent: the message is the one earlier versions wrote
    assert "message_resource_id" not in json.loads(request_for().to_json())
    assert decode(request_for().to_json()).message_resource_id is None


@pytest.mark.parametrize("value", [0, -1, 2**31, "16777219", 1.5, True])
def test_a_message_resource_id_must_be_a_resource_id(value):
    document = json.loads(request_for().to_json())
    document["message_resource_id"] = value
    with pytest.raises(QueueMessageError, match="message_resource_id"):
        decode(json.dumps(document))


def test_hostile_values_are_carried_verbatim():
    hostile = "x'); DROP TABLE v_R_System; --\n\t%\u00d1and\u00fa \U0001f4bb"
    request = request_for(
        machine=hostile,
        strings=("MsgType_Office365Upgrade", "projectInstalled", hostile, "y" * 255),
    )
    decoded = decode(request.to_json())
    assert decoded.machine_name == hostile
    assert decoded.insertion_strings["InsertionString3"] == hostile
    assert decoded.insertion_strings["InsertionString4"] == "y" * 255


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("not json", "queue message is not JSON"),
        (b"\xff\xfe", "queue message is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"schema_version": 2}', "schema_version 2; this version of cm-remediate reads 1"),
        ('{"site_code": "PS1"}', "schema_version None"),
    ],
)
def test_malformed_bodies_raise_a_clear_error(body, expected):
    with pytest.raises(QueueMessageError, match=expected):
        decode(body)


def test_missing_and_extra_fields_break_the_contract():
    document = json.loads(request_for().to_json())
    del document["collection_id"]
    document["surprise"] = 1
    with pytest.raises(QueueMessageError) as caught:
        decode(json.dumps(document))
    assert "collection_id: Field required" in str(caught.value)
    assert "surprise: Extra inputs are not permitted" in str(caught.value)


def test_queue_fixtures_follow_the_contract():
    """Every fixture under tests/fixtures/queue names its expected outcome, and the valid
    ones decode; the remediation tests replay them through the queue function."""
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 10
    for path in files:
        fixture = json.loads(path.read_text(encoding="utf-8"))
        assert {"description", "expected_outcome", "body"} <= fixture.keys(), path.name
        body = body_of(fixture)
        if fixture["expected_outcome"] == "rejected-input" and fixture.get("contract_violation"):
            with pytest.raises(QueueMessageError):
                decode(body)
        else:
            decoded = decode(body)
            assert decoded.schema_version == 1
            # what travels on the queue is base64 of the UTF-8 JSON
            assert decode(base64.b64decode(base64.b64encode(body.encode())).decode()) == decoded
