"""The Remediator on hostile queue messages, on the real stack (PostgreSQL, Azurite, the
AdminService simulator): each message ends in exactly one recorded outcome,
``rejected-input`` for every invalid one, and only a valid one may change a collection,
and only for the device of its own name."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from azure.data.tables import TableClient
from hypothesis import event, given
from hypothesis import strategies as st

from devstack.adminservice import AdminServiceSimulator, TokenSigner
from devstack.tls import LocalCA
from shared.adminservice import AdminServiceClient
from shared.audit import UNPARSED_PARTITION, AuditLog, audit_table_name
from shared.queue_messages import RemediationRequest
from shared.remediation import Remediator
from shared.retry import RetryPolicy
from shared.rules import RuleSet, parse_rules
from shared.runtime import Runtime
from tests.conftest import Stack
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

Expected = Literal["unparsed", "rejected", "valid"]


def rule_set() -> RuleSet:
    rules = [
        {**rule, "name": name, "collection_id": COLLECTION_ID, "target": "adminservice"}
        for name, rule in RULES.items()
    ]
    return parse_rules(json.dumps({"rules": rules}))


@dataclass
class App:
    """One Remediator per identity source, as the runtime builds it; one audit table."""

    remediators: dict[str, Remediator]
    audit: AuditLog
    audit_table: TableClient
    simulator: AdminServiceSimulator


@pytest.fixture
def app(
    stack: Stack,
    simulator: AdminServiceSimulator,
    token_signer: TokenSigner,
    local_ca: LocalCA,
) -> App:
    stack.site_db.insert_devices(device_records())
    # Some devices start as members, so that "remove" has something to remove.
    simulator.set_direct_members(
        COLLECTION_ID, [r for r, n in RESOURCE_NAMES.items() if "&" in n or "+" in n or n == "pc02"]
    )
    remediators: dict[str, Remediator] = {}
    runtime: Runtime | None = None
    for source in ("sitedb", "adminservice"):
        runtime = stack.runtime(
            rule_set(),
            ADMINSERVICE_URL=simulator.cmg_url,
            TLS_CA_BUNDLE=str(local_ca.bundle_path),
            IDENTITY_SOURCE=source,
        )
        # Not built from settings: tokens come from the test's own signer (Entra ID is
        # not what these properties are about).
        runtime.__dict__["adminservice"] = AdminServiceClient(
            simulator.cmg_url,
            StaticTokens(token_signer),
            runtime.http,
            retry=RetryPolicy(attempts=1),
        )
        runtime.clock = lambda: NOW
        # No pauses between the audit table's own retries (a refused write is refused
        # each time); the table is the one the runtime names.
        table = runtime.storage.table(audit_table_name(runtime.settings.remediation_queue))
        runtime.__dict__["audit"] = AuditLog(table, sleep=lambda _: None)
        remediators[source] = runtime.remediator
    assert runtime is not None
    return App(remediators, runtime.audit, table, simulator)


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
        app.simulator.reset_calls()
        remediator = app.remediators[source]
        message_id = f"m{next(message_ids)}"
        # As the queue function calls it: the body as bytes (a raw lone surrogate as the
        # bytes a hostile writer would send), then flush whatever happens.
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        try:
            outcome = remediator.handle(raw, message_id=message_id)
        finally:
            remediator.flush()
        handled += 1
        assert outcome is not None and outcome.new, expected
        event(f"{source}: {expected} -> {outcome.kind}")  # --hypothesis-show-statistics
        if expected == "unparsed":
            assert outcome.kind == "rejected-input"
            row = app.audit_table.get_entity(UNPARSED_PARTITION, message_id)
            assert row["Outcome"] == "rejected-input"
        else:
            parsed = RemediationRequest.model_validate_json(body)
            stored = app.audit.find(parsed)
            assert stored is not None and stored.kind == outcome.kind
            if expected == "rejected":
                assert outcome.kind == "rejected-input", outcome.reason
            else:
                assert outcome.kind in decisions(parsed), outcome.reason
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
    # Exactly one outcome per message: as many rows as messages handled, no more.
    assert sum(1 for _ in app.audit_table.list_entities(select=["RowKey"])) == handled


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
    remediator = app.remediators["sitedb"]
    outcome = remediator.handle(valid_request(machine_name="A" * 33_000), message_id="long")
    assert outcome is not None and outcome.kind == "rejected-input"


def test_a_status_message_from_the_end_of_time_is_decided(app: App) -> None:
    remediator = app.remediators["sitedb"]
    outcome = remediator.handle(valid_request(time_utc="9999-12-31T12:00:00Z"), message_id="end")
    assert outcome is None or outcome.kind == "unknown-device"
