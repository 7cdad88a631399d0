"""The queue function on hostile queue messages, on the real stack (PostgreSQL, Azurite,
the AdminService simulator), delivered through Microsoft's worker library as the host
delivers them: each message ends in exactly one recorded outcome, ``rejected-input`` for
every invalid one, and only a valid one may change a collection, and only for the
device of its own name. A body that is not UTF-8 never reaches the function: the host
cannot decode it and moves it to the poison queue."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient
from hypothesis import event, given
from hypothesis import strategies as st

from devstack.adminservice import AdminServiceSimulator, TokenSigner
from devstack.functions_host import FunctionsHost, Invocation
from devstack.queue_host import QueueTriggerListener
from devstack.tls import LocalCA
from shared.app.overrides import Overrides
from shared.app.runtime import Runtime, get_runtime, process_overrides, reset_runtime, use_overrides
from shared.domain.requests import RemediationRequest, decode
from shared.errors import QueueMessageError
from shared.platform.retry import RetryPolicy
from shared.remediation.audit_log import UNPARSED_PARTITION, AuditLog, audit_table_name
from shared.targets.adminservice import AdminServiceClient
from tests.conftest import FunctionApp, InvocationFailed, Stack
from tests.helpers import request_document
from tests.property.conftest import (
    COLLECTION_ID,
    DEVICE_NAMES,
    FIRST_RESOURCE_ID,
    StaticTokens,
    device_records,
    track,
    with_fixtures,
)
from tests.property.oracles import is_netbios_name
from tests.property.strategies import (
    INSERTION_KEYS,
    any_char,
    any_text,
    contract_violations,
    deep,
    hostile_char,
    lone_surrogate,
    netbios_names,
    realistic_times,
    rule_names,
)

pytestmark = pytest.mark.stack

#: After every generated status message time plus RESOLVE_RETRY_HOURS: a device that is
#: not found is given up on at once, so every valid request, too, ends in an outcome.
NOW = datetime(2200, 1, 1, tzinfo=UTC)
RULES: dict[str, dict[str, Any]] = {
    "add-on-install": {"action": "add", "match": {"InsertionString1": "MsgType_Property"}},
    "remove-on-uninstall": {"action": "remove", "match": {"InsertionString1": "MsgType_Gone"}},
}
CHANGES = ("AddMembershipRule", "DeleteMembershipRule", "RequestRefresh", "AddMembershipRules")
RESOURCE_NAMES = {FIRST_RESOURCE_ID + i: name for i, name in enumerate(DEVICE_NAMES)}
REPO = Path(__file__).resolve().parents[2]
#: The largest message the queue service stores (64 KiB of base64 text).
QUEUE_MESSAGE_LIMIT = 64 * 1024

Expected = Literal["unparsed", "rejected", "valid"]


def rules_file(directory: Path) -> str:
    """RULES as the app's rules file: its path."""
    rules = [
        {**rule, "name": name, "collection_id": COLLECTION_ID, "target": "adminservice"}
        for name, rule in RULES.items()
    ]
    path = directory / "property-rules.json"
    path.write_text(json.dumps({"rules": rules}), encoding="utf-8")
    return str(path)


@dataclass
class App:
    """The function app on the property stack, one IDENTITY_SOURCE at a time; one
    audit table, read by the test itself."""

    functions: FunctionApp
    listener: QueueTriggerListener
    queue: QueueClient
    simulator: AdminServiceSimulator
    audit: AuditLog
    audit_table: TableClient
    monkeypatch: pytest.MonkeyPatch
    source: str | None = None
    poisoned: int = 0
    invocations: list[Invocation] = field(default_factory=list)

    def use(self, source: str) -> Runtime:
        """The app configured with IDENTITY_SOURCE=source: the environment changes, and
        the next invocation runs on a runtime built from it."""
        if source != self.source:
            self.monkeypatch.setenv("IDENTITY_SOURCE", source)
            reset_runtime()
            self.source = source
        return get_runtime()

    def deliver(self, text: str, message_id: str) -> Invocation:
        """One delivery of a decoded message to ``apply_remediation``, through the
        worker; fails the test (InvocationFailed) when the function raises."""
        invocation = self.functions.deliver(text, message_id=message_id, check=False)
        self.invocations.append(invocation)
        if not invocation.ok:
            raise InvocationFailed(invocation)
        return invocation

    def outcome(self, text: str, message_id: str) -> tuple[str, str] | None:
        """(kind, reason) of the outcome recorded for a delivered message: under the
        request's keys, or under the message ID when it did not parse at all."""
        try:
            request = decode(text)
        except QueueMessageError:
            with contextlib.suppress(ResourceNotFoundError):
                row = self.audit_table.get_entity(UNPARSED_PARTITION, message_id)
                return str(row["Outcome"]), str(row["Reason"])
            return None
        stored = self.audit.find(request)
        return None if stored is None else (stored.kind, stored.reason)

    def enqueue_undecodable(self, raw: bytes) -> bool:
        """Put bytes that are not UTF-8 on the queue, base64-encoded as every writer
        does, and let the host's listener take them. False when the queue service
        could not hold the message at all."""
        content = base64.b64encode(raw).decode("ascii")
        if len(content) > QUEUE_MESSAGE_LIMIT:
            return False
        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()
        self.queue.send_message(content)
        report = self.listener.drain()
        # Never handed to the function: moved to the poison queue as it was.
        assert report.invocations == [], [i.error for i in report.invocations]
        assert report.poisoned == report.undecodable == 1, report
        self.poisoned += 1
        return True


@pytest.fixture
def app(
    stack: Stack,
    simulator: AdminServiceSimulator,
    token_signer: TokenSigner,
    local_ca: LocalCA,
    functions_host: FunctionsHost,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[App]:
    stack.site_db.insert_devices(device_records())
    # Some devices start as members, so that "remove" has something to remove.
    simulator.set_direct_members(
        COLLECTION_ID, [r for r, n in RESOURCE_NAMES.items() if "&" in n or "+" in n or n == "pc02"]
    )
    settings = stack.settings_values(
        ADMINSERVICE_URL=simulator.cmg_url,
        TLS_CA_BUNDLE=str(local_ca.bundle_path),
        REMEDIATION_RULES_FILE=rules_file(tmp_path),
        EXPORT_SCHEDULE="0 */5 * * * *",
        AzureWebJobsScriptRoot=str(REPO),
    )
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    connection = stack.azurite.connection_string
    table = TableClient.from_connection_string(connection, audit_table_name(stack.queue_name))
    # No pauses between the audit table's own retries (a refused write is refused each
    # time); the table is the one the runtime names.
    audit = AuditLog(table, sleep=lambda _: None)
    before = process_overrides()
    # Every runtime the functions build: tokens come from the test's own signer (Entra
    # ID is not what these properties are about).
    use_overrides(
        Overrides(
            clock=lambda: NOW,
            delegated_tokens=StaticTokens(token_signer),
            adminservice=lambda url, tokens, session: AdminServiceClient(
                url, tokens, session, retry=RetryPolicy(attempts=1)
            ),
            outcome_store=audit,
        )
    )
    functions = FunctionApp(functions_host)
    listener = functions.listener()
    queue = stack.raw_queue()
    try:
        yield App(functions, listener, queue, simulator, audit, table, monkeypatch)
    finally:
        listener.close()
        queue.close()
        table.close()
        use_overrides(before)


# -- the generated messages -----------------------------------------------------------------

bad_netbios_names = st.one_of(
    st.tuples(netbios_names, st.one_of(hostile_char, any_char), st.integers(0, 15)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    ),
    st.text(any_char, min_size=16, max_size=40),
    st.tuples(any_char, st.integers(16, 4000)).map(lambda t: t[0] * t[1]),
    st.sampled_from(["", ".PC01", "PC01 ", "PC 01", "PC01\x00", "PC\u200b01", "'; --", "A*"]),
    st.sampled_from([n for n in DEVICE_NAMES if not is_netbios_name(n)]),
).filter(lambda name: not is_netbios_name(name))
good_netbios_names = st.one_of(
    netbios_names,
    st.sampled_from([n for n in DEVICE_NAMES if is_netbios_name(n)]).map(
        lambda n: n.swapcase() if n.isascii() else n
    ),
)
short_strings = st.dictionaries(
    st.sampled_from(INSERTION_KEYS), st.text(any_char, max_size=255), max_size=4
)


@st.composite
def valid_shape(draw: st.DrawFn, record_id: int) -> tuple[dict[str, Any], Expected]:
    """A request that keeps the contract, hostile in one way the Remediator must catch,
    or not hostile at all."""
    rule = draw(st.sampled_from(sorted(RULES)))
    document: dict[str, Any] = {
        "schema_version": 1,
        "site_code": "PS1",
        "record_id": record_id,
        "message_id": 39997,
        "time_utc": realistic_times_iso(draw),
        "machine_name": draw(good_netbios_names),
        "insertion_strings": {**draw(short_strings), **RULES[rule]["match"]},
        "rule": rule,
        "collection_id": COLLECTION_ID,
        "action": RULES[rule]["action"],
        "target": "adminservice",
        "exported_utc": realistic_times_iso(draw),
    }
    how = draw(st.sampled_from(["none", "name", "long-string", "rule", "mismatch"]))
    if how == "none":
        return document, "valid"
    if how == "name":
        document["machine_name"] = draw(bad_netbios_names)
    elif how == "long-string":
        key = draw(st.sampled_from(INSERTION_KEYS))
        document["insertion_strings"][key] = draw(any_char) * draw(st.integers(256, 20_000))
    elif how == "rule":
        document["rule"] = draw(rule_names.filter(lambda r: r not in RULES))
    else:
        field, value = draw(
            st.sampled_from(
                [
                    ("action", "remove" if document["action"] == "add" else "add"),
                    ("target", "webservice"),
                    ("collection_id", "PS100124"),
                    ("collection_id", "PS1000FF"),
                ]
            )
        )
        document[field] = value
    return document, "rejected"


def realistic_times_iso(draw: st.DrawFn) -> str:
    return draw(realistic_times).isoformat().replace("+00:00", "Z")


@st.composite
def nasty(draw: st.DrawFn, record_id: int) -> str:
    """A contract violation of the kinds that once escaped as crashes or failed writes:
    parser limits, lone surrogates, unrepresentable times, reasons too long to record."""
    document, _ = draw(valid_shape(record_id))
    how = draw(
        st.sampled_from(["deep", "digits", "surrogate", "time", "version", "extra", "collection"])
    )
    if how == "deep":
        document["insertion_strings"] = "@@"
        nested = deep(draw(st.integers(900, 50_000)), draw(st.sampled_from(["array", "object"])))
        return json.dumps(document).replace('"@@"', nested)
    if how == "digits":
        return json.dumps(document).replace(str(record_id), "7" * draw(st.integers(4301, 6000)))
    if how == "surrogate":
        field = draw(st.sampled_from(["machine_name", "insertion_strings"]))
        text = draw(good_netbios_names) + draw(lone_surrogate)
        document[field] = text if field == "machine_name" else {"InsertionString3": text}
    elif how == "time":
        document[draw(st.sampled_from(["time_utc", "exported_utc"]))] = draw(
            st.sampled_from(
                ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "1600-01-01T00:00:00Z",
                 "9999-12-31T23:59:59-01:00"]
            )
        )  # fmt: skip
    elif how == "version":
        document["schema_version"] = draw(any_char) * draw(st.integers(1, 40_000))
    elif how == "extra":
        document[draw(any_char) * draw(st.integers(1, 40_000))] = draw(any_text)
    else:
        document["collection_id"] = draw(any_char) * draw(st.integers(9, 40_000))
    return json.dumps(document, ensure_ascii=draw(st.booleans()))


@st.composite
def cases(draw: st.DrawFn, ids: Iterator[int]) -> tuple[str | bytes, Expected, str]:
    """(body, what must happen, identity source)."""
    source = draw(st.sampled_from(["sitedb", "adminservice"]))
    kind = draw(st.sampled_from(["junk", "violation", "nasty", "valid-shape", "valid-shape"]))
    if kind == "junk":
        body: str | bytes = draw(st.one_of(st.binary(max_size=200), any_text))
        return body, "unparsed", source
    if kind == "violation":
        return draw(contract_violations(record_id=next(ids))), "unparsed", source
    if kind == "nasty":
        return draw(nasty(next(ids))), "unparsed", source
    document, expected = draw(valid_shape(next(ids)))
    return json.dumps(document, ensure_ascii=draw(st.booleans())), expected, source


# -- the property ---------------------------------------------------------------------------


def decisions(request: RemediationRequest) -> set[str]:
    """The outcomes a valid request may end in, from the records of its name: none,
    several (which tie by construction), or one."""
    named = [n for n in DEVICE_NAMES if n.lower() == request.machine_name.lower()]
    if not named:
        return {"unknown-device"}
    if len(named) > 1:
        return {"ambiguous"}
    return {"added", "already-member"} if request.action == "add" else {"removed", "not-member"}


def test_every_hostile_message_ends_in_one_recorded_outcome(
    app: App, request: pytest.FixtureRequest
) -> None:
    record_ids = itertools.count(2**56 + 1)
    message_ids = itertools.count(1)
    handled = 0

    @with_fixtures(250)
    @given(cases(record_ids))
    def deliver(case: tuple[str | bytes, Expected, str]) -> None:
        nonlocal handled
        body, expected, source = case
        app.use(source)
        app.simulator.reset_calls()
        message_id = f"m{next(message_ids)}"
        # What a writer puts on the queue: the body's bytes (a lone surrogate as the
        # bytes a hostile writer would send), which the host decodes back to text.
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            assert expected == "unparsed"
            sent = app.enqueue_undecodable(raw)
            event(f"{source}: not UTF-8 -> {'poisoned by the host' if sent else 'too large'}")
            return
        app.deliver(text, message_id)
        handled += 1
        recorded = app.outcome(text, message_id)
        assert recorded is not None, (expected, "no outcome recorded")
        kind, reason = recorded
        if expected == "unparsed":
            # Refused before it was a request: recorded under its message ID.
            row = app.audit_table.get_entity(UNPARSED_PARTITION, message_id)
            assert row["Outcome"] == kind == "rejected-input", reason
        elif expected == "rejected":
            assert kind == "rejected-input", reason
        else:
            parsed = RemediationRequest.model_validate_json(text)
            assert kind in decisions(parsed), reason
        event(f"{source}: {expected} -> {kind}")  # --hypothesis-show-statistics
        calls = app.simulator.calls
        if expected != "valid":
            # Invalid input never reaches the AdminService: no look-up, no change.
            assert calls == [], calls
            return
        for call in calls:
            if call.route in CHANGES and call.resource_id is not None:
                # A change only ever concerns a device of the very name.
                named = RESOURCE_NAMES[call.resource_id]
                assert named.casefold() == parsed.machine_name.casefold(), (named, parsed)

    track(deliver, request.node.nodeid)
    deliver()
    # Exactly one outcome per message the function was given: as many rows as
    # messages handled, no more (a second row would be a second decision).
    assert sum(1 for _ in app.audit_table.list_entities(select=["RowKey"])) == handled
    assert all(i.ok for i in app.invocations)


# -- inputs the property leaves out: bugs in modules owned elsewhere ---------------------


def valid_request(**fields: Any) -> str:
    document = request_document(
        record_id=2**56 + 99,
        machine_name="PC-NOT-THERE",
        insertion_strings={"InsertionString1": "MsgType_Property"},
        rule="add-on-install",
        collection_id=COLLECTION_ID,
    )
    return json.dumps({**document, **fields})


def test_a_machine_name_too_long_for_the_audit_table_is_still_rejected(app: App) -> None:
    app.use("sitedb")
    body = valid_request(machine_name="A" * 33_000)
    app.deliver(body, "long")
    recorded = app.outcome(body, "long")
    assert recorded is not None and recorded[0] == "rejected-input", recorded


def test_a_status_message_from_the_end_of_time_is_decided(app: App) -> None:
    app.use("sitedb")
    body = valid_request(time_utc="9999-12-31T12:00:00Z")
    app.deliver(body, "end")
    # Decided as unknown, or put back on the queue to be looked up again later.
    recorded = app.outcome(body, "end")
    assert recorded is None or recorded[0] == "unknown-device", recorded
