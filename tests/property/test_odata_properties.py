"""The OData parameter path: whatever the machine name, the $filter the client sends
is one comparison with exactly that name, and the AdminService answers only records of
that name. And the simulator's comparisons of Int64 and DateTimeOffset values agree with
arithmetic on the numbers and instants themselves."""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.adapters import BaseAdapter

from devstack.adminservice import AdminServiceSimulator, ODataError, parse_filter
from devstack.adminservice.entities import _iso
from devstack.adminservice.filter import _lex
from devstack.adminservice.odata import _query_options
from shared.errors import CmRemediateError
from shared.targets.adminservice import AdminServiceClient
from shared.targets.adminservice_batches import MAX_PER_QUERY
from tests.property.conftest import DEVICE_NAMES, with_fixtures
from tests.property.strategies import any_text, hostile_char, lone_surrogate, unicode_text

BASE = "https://cm.contoso.example/AdminService/"


class CaptureAdapter(BaseAdapter):
    """Answers every request with an empty result and keeps the URL as sent."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        assert request.url is not None
        self.urls.append(request.url)
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"value": []}'
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


class NoTokens:
    def token(self, *, fresh: bool = False) -> str:
        return "t"


def sent_filter(name: str) -> tuple[str, str] | None:
    """The (path, $filter) the real client sends for ``name``; None when it sent nothing."""
    adapter = CaptureAdapter()
    session = requests.Session()
    session.mount("https://", adapter)
    client = AdminServiceClient(BASE, NoTokens(), session)
    assert client.find_devices(name) == []
    if not adapter.urls:
        return None
    (url,) = adapter.urls
    split = urlsplit(url)
    # Parsed as the simulator parses the request target: its strict query parser.
    options = _query_options(split.query)
    assert set(options) == {"$filter", "$select"}
    return split.path, options["$filter"]


def variants_that_differ(name: str) -> list[str]:
    """Names a correct filter for ``name`` must not match: cut at every quote (what an
    injection would leave as the literal), extended, shortened."""
    cuts = [name[:i] for i, c in enumerate(name) if c == "'"]
    cuts += [name[i + 1 :] for i, c in enumerate(name) if c == "'"]
    candidates = [*cuts, name + "x", "x" + name, name[:-1], name + "'", "'" + name]
    return [c for c in candidates if c.casefold() != name.casefold()]


@settings(max_examples=800)
@given(
    st.one_of(
        any_text,
        st.text(st.sampled_from("'%&#+/?=;$()\\ "), max_size=12),
        st.sampled_from(DEVICE_NAMES).map(lambda n: n + "' or NetbiosName eq '" + n),
        st.tuples(st.sampled_from(DEVICE_NAMES), hostile_char).map("".join),
    )
)
def test_the_filter_is_exactly_one_comparison_with_the_name(name: str) -> None:
    sent = sent_filter(name)
    assert sent is not None
    path, text = sent
    assert path == "/AdminService/wmi/SMS_R_System"
    # The strict grammar reads one property, one operator, one string literal: the name.
    tokens = _lex(text)
    assert [(t.kind, t.value) for t in tokens[:2]] == [
        ("ident", "NetbiosName"),
        ("ident", "eq"),
    ]
    assert len(tokens) == 3 and tokens[2].kind == "string" and tokens[2].value == name
    matches = parse_filter(text, "SMS_R_System")
    assert matches({"NetbiosName": name})
    assert matches({"NetbiosName": name.upper()}) == (name.upper().casefold() == name.casefold())
    for other in variants_that_differ(name):
        assert not matches({"NetbiosName": other}), other


@settings(max_examples=300)
@given(st.tuples(any_text, lone_surrogate, any_text).map("".join))
def test_a_name_that_is_not_text_names_no_record(name: str) -> None:
    # A lone surrogate cannot travel in a URL (UTF-8) and no record, read as JSON,
    # carries one: the client answers "none" without a request, and without a crash.
    assert sent_filter(name) is None


# -- against the simulator --------------------------------------------------------------

names_to_ask = st.one_of(
    st.sampled_from(DEVICE_NAMES),
    st.sampled_from(DEVICE_NAMES).map(str.swapcase),
    st.sampled_from(DEVICE_NAMES).map(lambda n: n.rstrip(" ")),
    st.tuples(st.sampled_from(DEVICE_NAMES), st.sampled_from(DEVICE_NAMES)).map(
        lambda t: f"{t[0]}' or NetbiosName eq '{t[1]}"
    ),
    st.sampled_from(["%", "_", "PC%", "PC_", "PC__", "[PC]%", "*", "' or ''='", "'"]),
    unicode_text,
    st.tuples(any_text, lone_surrogate).map("".join),
)


@with_fixtures(200)
@given(names_to_ask)
def test_the_adminservice_answers_only_records_of_the_name(
    adminservice_client: AdminServiceClient, simulator: AdminServiceSimulator, name: str
) -> None:
    try:
        found = adminservice_client.find_devices(name)
    except CmRemediateError as error:  # pragma: no cover - shown with the name on failure
        pytest.fail(f"{name!r}: {error}")
    # WQL compares strings case-insensitively; nothing else makes two names equal.
    expected = sorted(n for n in DEVICE_NAMES if n.casefold() == name.casefold())
    assert sorted(r.netbios_name or "" for r in found) == expected
    assert all(call.status == 200 for call in simulator.calls), simulator.calls[-1]


@with_fixtures(100)
@given(st.lists(names_to_ask, min_size=1, max_size=MAX_PER_QUERY))
def test_names_asked_together_get_what_each_gets_alone(
    adminservice_client: AdminServiceClient, simulator: AdminServiceSimulator, names: list[str]
) -> None:
    before = simulator.count_calls("SMS_R_System")
    try:
        together = adminservice_client.find_devices_named(names)
    except CmRemediateError as error:  # pragma: no cover - shown with the names on failure
        pytest.fail(f"{names!r}: {error}")
    # one query for the whole batch (none when no name can be carried)
    assert simulator.count_calls("SMS_R_System") - before <= 1
    for name in names:
        expected = sorted(n for n in DEVICE_NAMES if n.casefold() == name.casefold())
        found = together.get(name.casefold(), [])
        assert sorted(r.netbios_name or "" for r in found) == expected, name


def test_the_property_client_is_authorised(
    adminservice_client: AdminServiceClient, simulator: AdminServiceSimulator
) -> None:
    # The properties above would pass vacuously against a service that refused us.
    assert [r.netbios_name for r in adminservice_client.find_devices("pc01")] == ["PC01", "PC01"]
    assert simulator.calls[-1].upn is not None


# -- comparisons of numbers and dates ---------------------------------------------------------

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
INT64 = st.integers(-(2**63) + 1, 2**63 - 1)
#: An Int64 near another one, so that equal and adjacent values come up often.
int64_pairs = INT64.flatmap(
    lambda a: st.tuples(st.just(a), st.one_of(st.just(a), INT64, st.integers(a - 2, a + 2)))
).filter(lambda pair: abs(pair[1]) < 2**63)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
#: Instants as the site database holds them: whole milliseconds.
stored_times = st.datetimes(datetime(1990, 1, 1), datetime(2090, 1, 1)).map(
    lambda value: value.replace(microsecond=value.microsecond // 1000 * 1000, tzinfo=UTC)
)


@settings(max_examples=400)
@given(int64_pairs, st.sampled_from(sorted(OPERATORS)))
def test_int64_comparisons_are_exact(pair: tuple[int, int], name: str) -> None:
    value, literal = pair  # past 2^53 too: no float in between
    matches = parse_filter(f"RecordID {name} {literal}", "SMS_StatMsgWithInsStrings")
    assert matches({"RecordID": value}) == OPERATORS[name](value, literal)


@settings(max_examples=400)
@given(
    stored_times,
    st.one_of(stored_times, st.timedeltas(timedelta(seconds=-2), timedelta(seconds=2))),
    offsets,
    st.sampled_from(sorted(OPERATORS)),
)
def test_date_literals_compare_as_instants(
    stored: datetime, other: datetime | timedelta, offset: timezone, name: str
) -> None:
    # The literal is unquoted ISO 8601 in any offset; the entity carries the value as
    # the simulator writes it (UTC, with its fraction).
    instant = stored + other if isinstance(other, timedelta) else other
    literal = instant.astimezone(offset).isoformat()
    matches = parse_filter(f"Time {name} {literal}", "SMS_StatMsgWithInsStrings")
    assert matches({"Time": _iso(stored, fraction=True)}) == OPERATORS[name](stored, instant)


@settings(max_examples=200)
@given(stored_times, offsets, st.sampled_from(sorted(OPERATORS)))
def test_a_quoted_date_never_compares(instant: datetime, offset: timezone, name: str) -> None:
    quoted = "'" + instant.astimezone(offset).isoformat() + "'"
    with pytest.raises(ODataError) as caught:
        parse_filter(f"Time {name} {quoted}", "SMS_StatMsgWithInsStrings")
    assert caught.value.status == 400 and "incompatible" in caught.value.message
