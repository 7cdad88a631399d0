"""The queue message parser on hostile input: a RemediationRequest or a
QueueMessageError, never anything else; valid requests survive the queue unchanged."""

from __future__ import annotations

import base64
import binascii
import json
import string
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.requests import MAX_ENCODED_BYTES, RemediationRequest, decode
from shared.errors import QueueMessageError
from shared.queue.encoding import from_queue_text, to_queue_text
from tests.property.strategies import (
    FIELDS,
    any_text,
    contract_violations,
    deep,
    json_values,
    unicode_text,
    valid_documents,
)

BASE64_ALPHABET = set(string.ascii_letters + string.digits + "+/=")


def decode_or_refuse(body: str | bytes) -> RemediationRequest | None:
    """The request, or None when decode refused it with the typed error (and a reason)."""
    try:
        return decode(body)
    except QueueMessageError as error:
        assert str(error)  # an operator reads it in the audit table
        return None


def assert_sound(request: RemediationRequest) -> None:
    """What every decoded request guarantees, whatever the input was."""
    assert request.schema_version == 1
    assert len(request.site_code) == 3 and request.site_code.isascii()
    assert request.site_code.isalnum()
    assert 0 < request.record_id < 2**63
    for moment in (request.time_utc, request.exported_utc):
        assert moment.utcoffset() == timedelta(0)
    # Everything in it can be written as UTF-8 (the queue, the audit table, logs).
    for text in (request.machine_name, request.collection_id, *request.insertion_strings.values()):
        text.encode("utf-8")


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_request_or_refused(body: bytes) -> None:
    request = decode_or_refuse(body)
    if request is not None:
        assert_sound(request)


@settings(max_examples=1000)
@given(st.one_of(unicode_text, st.text(max_size=300)))
def test_arbitrary_text_is_a_request_or_refused(body: str) -> None:
    request = decode_or_refuse(body)
    if request is not None:
        assert_sound(request)


@settings(max_examples=500)
@given(json_values, st.booleans())
def test_arbitrary_json_is_refused(value: Any, ascii_only: bool) -> None:
    # A message needs eleven fields; these values have at most five keys at any level.
    assert decode_or_refuse(json.dumps(value, ensure_ascii=ascii_only)) is None


@settings(max_examples=100)
@given(
    st.integers(1, 100_000),
    st.sampled_from(["array", "object"]),
    st.one_of(st.none(), st.sampled_from(FIELDS)),
    valid_documents(),
)
def test_deep_nesting_is_refused(
    depth: int, kind: str, field: str | None, document: dict[str, Any]
) -> None:
    nested = deep(depth, kind)
    if field is None:
        body = nested
    else:
        # The nesting as the value of one field of an otherwise valid message.
        body = json.dumps({**document, field: "@@"}).replace('"@@"', nested)
    assert decode_or_refuse(body) is None
    assert decode_or_refuse(body.encode("utf-8")) is None


@settings(max_examples=1000)
@given(contract_violations())
def test_contract_violations_are_refused(body: str) -> None:
    assert decode_or_refuse(body) is None


@settings(max_examples=400)
@given(valid_documents())
def test_valid_messages_decode_verbatim_and_survive_the_queue(document: dict[str, Any]) -> None:
    request = decode_or_refuse(json.dumps(document, ensure_ascii=False))
    assert request is not None
    assert_sound(request)
    # Untrusted fields are carried verbatim, nothing trimmed or normalised.
    assert request.machine_name == document["machine_name"]
    assert request.insertion_strings == document["insertion_strings"]
    assert request.collection_id == document["collection_id"]
    assert request.time_utc == datetime.fromisoformat(document["time_utc"]).astimezone(UTC)

    size = len(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    try:
        text = request.to_json()
    except QueueMessageError:
        # Only a message near the queue's limit may be refused by the sender.
        assert size > MAX_ENCODED_BYTES - 1024
        return
    assert len(text.encode("utf-8")) <= MAX_ENCODED_BYTES
    on_the_queue = to_queue_text(text)
    assert on_the_queue.isascii()
    received = from_queue_text(on_the_queue)
    assert received is not None
    assert decode(received) == request
    assert decode(received.encode("utf-8")) == request


@settings(max_examples=500)
@given(any_text)
def test_queue_text_round_trips(text: str) -> None:
    encoded = to_queue_text(text)
    assert set(encoded) <= BASE64_ALPHABET
    assert from_queue_text(encoded) == text


@settings(max_examples=500)
@given(
    st.one_of(
        unicode_text,
        st.text(st.sampled_from([*sorted(BASE64_ALPHABET), " ", "\n", "-", "_", "é"])),
        st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode("ascii")),
    )
)
def test_queue_text_is_text_or_none(content: str) -> None:
    result = from_queue_text(content)
    if not set(content) <= BASE64_ALPHABET:
        assert result is None  # not base64: another writer, without the encode policy
        return
    if result is not None:
        # What came out is exactly the UTF-8 text of the base64 payload.
        assert result.encode("utf-8") == _b64(content)


def _b64(content: str) -> bytes:
    try:
        return binascii.a2b_base64(content.encode("ascii"), strict_mode=True)
    except binascii.Error:
        return b"<not base64>"
