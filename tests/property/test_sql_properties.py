"""The SQL parameter path against the PostgreSQL stand-in: a hostile machine name finds
the records of that very name and no other; hostile status messages are read back
verbatim and travel to the queue unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.datagen import GeneratedStatusMessage
from shared.domain.requests import RemediationRequest, decode
from shared.domain.rules import parse_rules
from shared.errors import SiteDatabaseError
from shared.export.site_database import SiteDatabaseClient
from tests.conftest import Stack
from tests.helpers import rule, rules_text
from tests.property.conftest import DEVICE_NAMES, device_records, with_fixtures
from tests.property.oracles import same_name
from tests.property.strategies import any_char, any_text, hostile_char, lone_surrogate

pytestmark = pytest.mark.stack

#: Characters on which SQL_Latin1_General_CP1_CI_AS, the stand-in's ICU collation and
#: "lower case, then equal" agree (no ignorable, width or multi-letter case mappings).
PLAIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -_%[]'&#+/?=;.ÑÚñú"


@pytest.fixture
def database(stack: Stack) -> Iterator[SiteDatabaseClient]:
    """The reader login's client, with DEVICE_NAMES in v_R_System."""
    stack.site_db.insert_devices(device_records())
    with SiteDatabaseClient(stack.site_db.reader_connection_string) as client:
        yield client


plain_names = st.one_of(
    st.sampled_from(DEVICE_NAMES),
    st.sampled_from(DEVICE_NAMES).map(str.swapcase),
    st.tuples(st.sampled_from(DEVICE_NAMES), st.integers(0, 3)).map(
        lambda t: t[0].rstrip(" ") + " " * t[1]
    ),
    st.sampled_from(["%", "_", "PC%", "PC_", "PC__", "PC[0-9]", "[PC]%", "PC0_", "'' OR ''=''"]),
    st.tuples(st.sampled_from(DEVICE_NAMES), st.sampled_from(DEVICE_NAMES)).map(
        lambda t: f"{t[0]}' OR Netbios_Name0 = '{t[1]}"
    ),
    st.text(st.sampled_from(PLAIN), max_size=16),
)


@with_fixtures(250)
@given(plain_names)
def test_a_name_finds_exactly_the_records_of_that_name(
    database: SiteDatabaseClient, name: str
) -> None:
    found = sorted(r.netbios_name or "" for r in database.find_devices(name))
    assert found == sorted(n for n in DEVICE_NAMES if same_name(n, name))


@with_fixtures(250)
@given(
    st.one_of(
        any_text,
        st.tuples(st.sampled_from(DEVICE_NAMES), st.text(any_char, min_size=1, max_size=3)).map(
            "".join
        ),
        st.tuples(st.sampled_from(DEVICE_NAMES), st.sampled_from("\x00\u200b\u00ad\ufe00")).map(
            "".join
        ),
        st.sampled_from(DEVICE_NAMES).map(lambda n: n.translate({0x50: 0xFF30, 0x43: 0xFF23})),
        st.tuples(any_text, lone_surrogate).map("".join),
    )
)
def test_a_hostile_name_finds_no_other_record(database: SiteDatabaseClient, name: str) -> None:
    try:
        found = database.find_devices(name)
    except SiteDatabaseError as error:
        # The only failure allowed is the typed one (a value the server cannot hold).
        assert "\x00" in name, error
        return
    # Equal under the collation alone (an ignorable character, a width variant, a name
    # the driver cut at NUL) is not enough: the record must carry the asked name.
    names = sorted(r.netbios_name or "" for r in found)
    assert names == sorted(n for n in DEVICE_NAMES if same_name(n, name))


# -- status messages with hostile content, read back through the exporter's reader -------

RULE = parse_rules(
    rules_text(rule(name="hostile", match={"InsertionString1": "MsgType_Property"}))
).rules[0]

#: What PostgreSQL text can hold (no NUL) and UTF-8 can carry (no lone surrogates).
stored_char = any_char.filter(lambda c: c != "\x00")
stored_text = st.one_of(
    st.text(stored_char, max_size=30),
    st.tuples(stored_char, st.integers(200, 512)).map(lambda t: t[0] * t[1]),
    st.tuples(st.text(stored_char, max_size=5), st.integers(1, 4)).map(lambda t: t[0] + " " * t[1]),
)
machine_names = st.one_of(
    st.text(stored_char, max_size=30),
    st.tuples(stored_char, st.integers(100, 128)).map(lambda t: t[0] * t[1]),
    st.sampled_from(DEVICE_NAMES),
    st.text(hostile_char.filter(lambda c: c != "\x00"), max_size=10),
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> GeneratedStatusMessage:
    strings = list(draw(st.lists(st.one_of(st.none(), stored_text), max_size=10)))
    if draw(st.booleans()):
        # Matched by the rule (the key must be there, in any case).
        strings = ["msgtype_PROPERTY", *strings[1:]] if strings else ["MsgType_Property"]
    when = datetime(2026, 1, 1) + timedelta(milliseconds=draw(st.integers(0, 10**10)))
    return GeneratedStatusMessage(
        site_code="PS1",
        machine_name=draw(machine_names),
        time_utc=when,
        insertion_strings=tuple(strings),
    )


@with_fixtures(120)
@given(st.lists(hostile_messages(), min_size=1, max_size=4))
def test_hostile_status_messages_are_read_verbatim_and_enqueued_unchanged(
    stack: Stack, database: SiteDatabaseClient, messages: list[GeneratedStatusMessage]
) -> None:
    ids = stack.site_db.insert_status_messages(messages)
    page = database.read_page("PS1", after_record_id=ids[0] - 1, limit=len(ids))
    assert [m.record_id for m in page] == ids
    for written, read in zip(messages, page, strict=True):
        assert read.machine_name == written.machine_name
        padded = written.insertion_strings + (None,) * (10 - len(written.insertion_strings))
        assert read.insertion_strings == padded
        assert read.time_utc == written.time_utc.replace(tzinfo=UTC)
        # What the exporter makes of it travels to the consumer unchanged.
        if RULE.matches(read):
            request = RemediationRequest.for_match(read, RULE, exported_utc=datetime.now(UTC))
            assert decode(request.to_json()) == request
            assert request.machine_name == written.machine_name
            assert request.insertion_strings == {
                f"InsertionString{i + 1}": s for i, s in enumerate(padded) if s is not None
            }
        else:
            assert padded[0] is None or padded[0].lower() != "msgtype_property"
