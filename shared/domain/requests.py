"""The queue message contract between the exporter and the remediation function.

One queue message per (status message, matching rule). JSON, UTF-8, base64 on the
queue (the encoding the queue trigger expects by default). docs/queue-message.md is
the human-readable form of this module; keep them in step.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from shared.domain.devices import is_text
from shared.domain.rules import Action, CollectionId, InsertionStringKey, Rule, RuleName, Target
from shared.domain.status_messages import StatusMessage
from shared.errors import QueueMessageError

SCHEMA_VERSION: Final = 1
#: How many times one (status message, rule) may be decided (the first time included).
MAX_DECISIONS: Final = 100
#: The storage service's limit is 64 KiB of (base64) text; stay well below it.
MAX_ENCODED_BYTES: Final = 48 * 1024

SiteCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{3}$")]
#: RecordID is a SQL bigint.
RECORD_ID_MAX: Final = 2**63 - 1
#: ResourceID is a SQL int (WMI uint32, site-assigned from 16777216 upwards).
RESOURCE_ID_MAX: Final = 2**31 - 1
#: The first day SQL Server's datetime (v_StatusMessage.Time) holds; the audit table
#: cannot store times before 1601 either.
EARLIEST_TIME: Final = datetime(1753, 1, 1, tzinfo=UTC)
#: How much of a problem's detail (a wrong value, a field name) an error message quotes:
#: the reason lands in the audit table, whose text properties hold 32K characters.
_QUOTE_LIMIT: Final = 80
_MAX_PROBLEMS: Final = 10


def _shorten(text: str) -> str:
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 3] + "..."


def _text(value: str) -> str:
    # Nothing downstream (the queue, the audit table, a URL, the ODBC driver, a log
    # file) can carry a lone surrogate.
    if not is_text(value):
        raise ValueError("holds a lone surrogate (\\ud800-\\udfff), which is not text")
    return value


Text = Annotated[str, AfterValidator(_text)]


class RemediationRequest(BaseModel):
    """Version 1 of the queue message: one status message, one rule that it matched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    site_code: SiteCode
    record_id: int = Field(gt=0, le=RECORD_ID_MAX)
    message_id: int
    time_utc: datetime
    #: As the client reported it: untrusted, carried verbatim. The exporter does not
    #: judge it; the remediation side validates it and records ``rejected-input``.
    machine_name: Text
    #: Every insertion string the message carried, verbatim (even past 255 characters).
    insertion_strings: dict[InsertionStringKey, Text]
    rule: RuleName
    collection_id: CollectionId
    action: Action
    target: Target
    exported_utc: datetime
    #: The ResourceID the status message carried (AdminService source only). Absent
    #: from the JSON when the source has none, so such messages stay byte for byte the
    #: ones of earlier versions.
    message_resource_id: int | None = Field(default=None, gt=0, le=RESOURCE_ID_MAX, strict=True)
    #: Which decision about this (status message, rule) the request asks for: 1 from
    #: the export, n + 1 from ``cmremediate retry`` after decision n. Absent from the
    #: JSON when 1, like ``message_resource_id``.
    decision: int = Field(default=1, ge=1, le=MAX_DECISIONS, strict=True)

    @field_validator("time_utc", "exported_utc")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone (UTC)")
        out_of_range = ValueError(f"must lie between {EARLIEST_TIME:%Y-%m-%d} and 9999-12-31 (UTC)")
        try:
            utc = value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-01:00 is past datetime.max in UTC
            raise out_of_range from None
        if utc < EARLIEST_TIME:
            raise out_of_range
        return utc

    def log_attributes(self) -> dict[str, object]:
        """The fields that identify this request in a log line, as record attributes
        (``extra=``; customDimensions in Application Insights)."""
        return {
            "site_code": self.site_code,
            "record_id": self.record_id,
            "machine_name": self.machine_name,
            "collection_id": self.collection_id,
            "rule": self.rule,
            "decision": self.decision,
        }

    @classmethod
    def for_match(
        cls, message: StatusMessage, rule: Rule, *, exported_utc: datetime
    ) -> RemediationRequest:
        """The request that ``message`` matching ``rule`` puts on the queue."""
        return cls(
            site_code=message.site_code,
            record_id=message.record_id,
            message_id=message.message_id,
            time_utc=message.time_utc,
            machine_name=message.machine_name,
            insertion_strings=message.present_insertion_strings(),
            rule=rule.name,
            collection_id=rule.collection_id,
            action=rule.action,
            target=rule.target,
            exported_utc=exported_utc,
            message_resource_id=message.resource_id,
        )

    def to_json(self) -> str:
        """The queue message text before base64 (the queue client encodes)."""
        omitted = {"message_resource_id"} if self.message_resource_id is None else set()
        if self.decision == 1:
            omitted.add("decision")
        text = self.model_dump_json(exclude=omitted or None)
        if len(text.encode("utf-8")) > MAX_ENCODED_BYTES:
            raise QueueMessageError(
                f"site={self.site_code} record={self.record_id}: the queue message would be "
                f"larger than {MAX_ENCODED_BYTES} bytes"
            )
        return text


def decode(body: str | bytes) -> RemediationRequest:
    """Parse a queue message body (already base64-decoded) or raise QueueMessageError."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        # ValueError: bad JSON, bad UTF-8, an integer past Python's 4300-digit limit;
        # RecursionError: nesting deeper than the parser's stack.
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise QueueMessageError(f"queue message is not JSON: {reason[:200]}") from None
    if not isinstance(document, dict):
        raise QueueMessageError("queue message is not a JSON object")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise QueueMessageError(
            f"queue message has schema_version {_shorten(repr(version))}; this version of "
            f"cm-remediate reads {SCHEMA_VERSION} (is an exporter of another version writing to "
            "this queue?)"
        )
    try:
        return RemediationRequest.model_validate(document)
    except ValidationError as error:
        items = error.errors()
        problems = "; ".join(
            f"{_shorten('.'.join(str(p) for p in item['loc']))}: {item['msg']}"
            for item in items[:_MAX_PROBLEMS]
        )
        if len(items) > _MAX_PROBLEMS:
            problems += f"; and {len(items) - _MAX_PROBLEMS} more"
        raise QueueMessageError(f"queue message breaks the contract: {problems}") from None
