"""The AdminService simulator serves status messages from the site database stand-in:
committed rows only, paged by RecordID on the client, with the strict OData grammar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from devstack.adminservice import (
    AdminServiceSimulator,
    JwksServer,
    ODataError,
    StatusMessageReader,
    TokenSigner,
    parse_filter,
)
from devstack.datagen import GENERIC_INFO, GeneratedStatusMessage, Workload, generate_workload
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from tests.conftest import Stack

ISSUER = "https://sts.windows.net/8d5c7a5e-0000-4000-8000-000000000002/"
ADMIN = "cm-svc@contoso.com"
WITH_STRINGS = "SMS_StatMsgWithInsStrings"
INSERTION_STRINGS = [f"InsString{number}" for number in range(1, 11)]
EAST = timezone(timedelta(hours=2))


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate_workload(seed=12, message_count=1500, devices_per_site=40)


@pytest.fixture
def make_api(
    local_ca: LocalCA, jwks: JwksServer, signer: TokenSigner
) -> Iterator[Callable[..., Api]]:
    started: list[AdminServiceSimulator] = []
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
    session.verify = str(local_ca.bundle_path)
    token = signer.token(issuer=ISSUER, upn=ADMIN)

    def make(database: SiteDatabase | None) -> Api:
        reader = None if database is None else StatusMessageReader.for_site_database(database)
        simulator = AdminServiceSimulator(
            local_ca, jwks_uri=jwks.url, issuer=ISSUER, admins=[ADMIN], status_messages=reader
        ).start()
        started.append(simulator)
        return Api(session, simulator, token)

    yield make
    session.close()
    for simulator in started:
        simulator.stop()
        assert simulator.internal_errors == []


@pytest.fixture
def loaded(stack: Stack, workload: Workload) -> list[int]:
    """The workload in the (emptied) site database; its RecordIDs."""
    return stack.site_db.load_workload(workload)


@pytest.fixture
def api(stack: Stack, loaded: list[int], make_api: Callable[..., Api]) -> Api:
    return make_api(stack.site_db)


class Api:
    """GETs against one simulator with one token."""

    def __init__(self, http: requests.Session, sim: AdminServiceSimulator, token: str) -> None:
        self.http, self.sim, self.token = http, sim, token

    def get(self, entity_set: str, **options: str) -> requests.Response:
        params = {f"${name}": value for name, value in options.items()}
        return self.http.get(
            f"{self.sim.cmg_url}wmi/{entity_set}",
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def values(self, entity_set: str, **options: str) -> list[dict[str, Any]]:
        response = self.get(entity_set, **options)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["value"]
        return rows

    def page_through(self, site: str, top: int = 100, **options: str) -> list[dict[str, Any]]:
        """Every 39997 message of ``site``, paged on the client by RecordID."""
        rows: list[dict[str, Any]] = []
        last = 0
        while True:
            page = self.values(
                WITH_STRINGS,
                filter=f"MessageID eq 39997 and SiteCode eq '{site}' and RecordID gt {last}",
                orderby="RecordID",
                top=str(top),
                **options,
            )
            rows += page
            if len(page) < top:
                return rows
            last = page[-1]["RecordID"]


def sql_rows(database: SiteDatabase, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows read as the reader login, as the SQL export reads them."""
    connection = database.connect_reader()
    try:
        return [tuple(row) for row in connection.execute(sql, *params).fetchall()]
    finally:
        connection.close()


def assert_odata_error(response: requests.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message


def odata_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


# -- paging, ordering, selecting -------------------------------------------------------------


def test_paging_by_record_id_returns_each_committed_row_once(stack: Stack, api: Api) -> None:
    for site in ("PS1", "PS2"):
        expected = sql_rows(
            stack.site_db,
            "SELECT RecordID FROM v_StatusMessage WHERE MessageID = ? AND SiteCode = ? "
            "ORDER BY RecordID",
            GENERIC_INFO,
            site,
        )
        got = [row["RecordID"] for row in api.page_through(site, top=97)]
        assert got == [record_id for (record_id,) in expected]
        assert len(got) > 97 * 3
    queries = api.sim.status_message_queries()
    assert queries and all(query.selective for query in queries)
    assert {query.site_codes for query in queries} == {frozenset({"PS1"}), frozenset({"PS2"})}
    # Pushed down to SQL: a page reads its own rows, not the site's.
    assert all(query.rows_read <= 97 for query in queries)


def test_message_id_and_site_code_select(api: Api, workload: Workload) -> None:
    rows = api.values(
        WITH_STRINGS,
        filter="MessageID eq 39997 and SiteCode eq 'PS1'",
        select="RecordID,MessageID,SiteCode,MachineName",
    )
    expected = [
        m for m in workload.messages if m.message_id == GENERIC_INFO and m.site_code == "PS1"
    ]
    assert len(rows) == len(expected) > 0
    assert {(r["MessageID"], r["SiteCode"]) for r in rows} == {(GENERIC_INFO, "PS1")}
    assert sorted(r["MachineName"] for r in rows) == sorted(m.machine_name for m in expected)
    assert set(rows[0]) == {"RecordID", "MessageID", "SiteCode", "MachineName"}


def test_orderby_record_id_desc_top_1_is_the_newest(api: Api, loaded: list[int]) -> None:
    (newest,) = api.values(
        "SMS_StatusMessage", filter="SiteCode eq 'PS2'", orderby="RecordID desc", top="1"
    )
    assert newest["RecordID"] == max(loaded)  # PS2's range lies above PS1's
    (query,) = api.sim.status_message_queries()
    assert query.rows_read == 1 and query.orderby == "RecordID desc"


def test_orderby_ties_skip_and_nulls(api: Api) -> None:
    options = {"filter": "MessageID eq 39997 and SiteCode eq 'PS1'", "select": "RecordID,Time"}
    rows = api.values(WITH_STRINGS, orderby="Time desc,RecordID", **options)
    keys = [(datetime.fromisoformat(r["Time"]), -r["RecordID"]) for r in rows]
    assert keys == sorted(keys, reverse=True)  # Time descending, RecordID ascending
    assert api.values(WITH_STRINGS, orderby="Time desc", **options) == rows  # ties: key order
    assert api.values(WITH_STRINGS, orderby="Time desc", skip="5", top="7", **options) == rows[5:12]
    # ResourceID is no column: ordered here, not in SQL, with the same answer.
    api.sim.set_status_message_resource_id(rows[3]["RecordID"], 16777219)
    by_resource = api.values(WITH_STRINGS, orderby="ResourceID desc", top="2", **options)
    assert by_resource[0]["RecordID"] == rows[3]["RecordID"]
    assert by_resource[1]["RecordID"] == min(r["RecordID"] for r in rows)


@pytest.mark.parametrize(
    ("orderby", "fragment"),
    [
        ("Bogus", "Bogus"),
        ("RecordID sideways", "asc|desc"),
        ("RecordID,RecordID desc", "duplicate"),
        ("MachineName", "string"),
        ("", "$orderby"),
    ],
)
def test_bad_orderby_is_400(api: Api, orderby: str, fragment: str) -> None:
    assert_odata_error(api.get(WITH_STRINGS, orderby=orderby), 400, fragment)


def test_orderby_on_the_in_memory_sets(make_api: Callable[..., Api]) -> None:
    api = make_api(None)
    api.sim.add_collection("PS100001", "one")
    api.sim.add_collection("PS100002", "two")
    rows = api.values("SMS_Collection", orderby="MemberCount desc,CollectionType", top="1")
    assert [r["CollectionID"] for r in rows] == ["PS100001"]  # ties: key order
    assert_odata_error(api.get("SMS_Collection", orderby="Name"), 400, "$orderby")


# -- dates -----------------------------------------------------------------------------------


def test_time_bounds_take_unquoted_literals(stack: Stack, api: Api, workload: Workload) -> None:
    times = sorted(m.time_utc for m in workload.messages if m.site_code == "PS1")
    middle = times[len(times) // 2]
    expected = sql_rows(
        stack.site_db,
        "SELECT RecordID FROM v_StatusMessage WHERE SiteCode = 'PS1' AND Time >= ? "
        "AND Time < ? ORDER BY RecordID",
        middle,
        middle + timedelta(hours=3),
    )
    later = (middle + timedelta(hours=3)).replace(tzinfo=UTC).astimezone(EAST)
    rows = api.values(
        "SMS_StatusMessage",
        filter=f"SiteCode eq 'PS1' and Time ge {odata_time(middle)} and Time lt {later.isoformat()}",
        select="RecordID,Time",
    )
    assert [r["RecordID"] for r in rows] == [record_id for (record_id,) in expected]
    assert all(middle <= datetime.fromisoformat(r["Time"]).replace(tzinfo=None) for r in rows)
    assert api.sim.status_message_queries()[-1].time_bound


def test_a_quoted_date_is_a_type_error(api: Api) -> None:
    response = api.get("SMS_StatusMessage", filter="Time ge '2026-11-20T08:00:00Z'")
    assert_odata_error(response, 400, "incompatible", "Edm.DateTimeOffset", "Edm.String")


def test_time_is_serialised_in_utc_with_its_fraction(stack: Stack, api: Api) -> None:
    ((record_id, when),) = sql_rows(
        stack.site_db,
        "SELECT RecordID, Time FROM v_StatusMessage WHERE SiteCode = 'PS1' AND RecordID = "
        "(SELECT MIN(RecordID) FROM v_StatusMessage WHERE SiteCode = 'PS1')",
    )
    (row,) = api.values("SMS_StatusMessage", filter=f"RecordID eq {record_id}", select="Time")
    assert row["Time"].endswith("Z")
    assert datetime.fromisoformat(row["Time"]) == when.replace(tzinfo=UTC)


# -- committed rows only -----------------------------------------------------------------------


def test_a_late_commit_is_invisible_until_committed(stack: Stack, api: Api) -> None:
    late = stack.site_db.begin_late_commit(
        GeneratedStatusMessage("PS1", "LATE-PC", datetime(2024, 11, 5, 8), GENERIC_INFO, ("a", "b"))
    )
    with late:
        after = stack.site_db.insert_status_messages(
            [GeneratedStatusMessage("PS1", "AFTER-PC", datetime(2024, 11, 5, 8), GENERIC_INFO)]
        )
        assert after[0] > late.record_id
        seen = {row["RecordID"] for row in api.page_through("PS1")}
        assert after[0] in seen and late.record_id not in seen
        assert api.values(WITH_STRINGS, filter=f"RecordID eq {late.record_id}") == []
        late.commit()
    (row,) = api.values(WITH_STRINGS, filter=f"RecordID eq {late.record_id}")
    assert (row["MachineName"], row["InsString1"], row["InsString2"]) == ("LATE-PC", "a", "b")
    assert late.record_id in {row["RecordID"] for row in api.page_through("PS1")}


# -- the insertion strings ---------------------------------------------------------------------


def test_strings_match_the_sql_view(stack: Stack, api: Api) -> None:
    columns = ", ".join(["RecordID", "MachineName", *INSERTION_STRINGS])
    expected = sql_rows(
        stack.site_db,
        f"SELECT {columns} FROM v_StatMsgWithInsStrings WHERE MessageID = ? AND SiteCode = ? "
        "ORDER BY RecordID",
        GENERIC_INFO,
        "PS2",
    )
    got = api.page_through("PS2", top=400, select=columns.replace(" ", ""))
    assert [tuple(row.values()) for row in got] == expected
    assert any(value is None for row in expected for value in row)  # NULL, not ''


def test_ins_strings_are_one_row_per_string_0_based(stack: Stack, api: Api) -> None:
    ((record_id,),) = sql_rows(
        stack.site_db,
        "SELECT MIN(RecordID) FROM v_StatMsgWithInsStrings WHERE InsString2 IS NOT NULL",
    )
    (with_strings,) = api.values(WITH_STRINGS, filter=f"RecordID eq {record_id}")
    rows = api.values(
        "SMS_StatMsgInsStrings", filter=f"RecordID eq {record_id}", orderby="InsStrIndex desc"
    )
    present = [i for i in range(10) if with_strings[INSERTION_STRINGS[i]] is not None]
    assert [r["InsStrIndex"] for r in rows] == present[::-1]
    for row in rows:
        assert row["RecordID"] == record_id
        assert row["InsStrValue"] == with_strings[f"InsString{row['InsStrIndex'] + 1}"]


def test_resource_id_is_null_unless_set(api: Api, loaded: list[int]) -> None:
    record_id = loaded[0]
    (row,) = api.values(WITH_STRINGS, filter=f"RecordID eq {record_id}")
    assert "ResourceID" in row and row["ResourceID"] is None
    api.sim.set_status_message_resource_id(record_id, 16777300)
    assert api.values(WITH_STRINGS, filter="ResourceID eq 16777300", select="RecordID") == [
        {"RecordID": record_id}
    ]
    (plain,) = api.values("SMS_StatusMessage", filter=f"RecordID eq {record_id}")
    assert "ResourceID" not in plain and "InsString1" not in plain
    api.sim.set_status_message_resource_id(record_id, None)
    assert api.values(WITH_STRINGS, filter="ResourceID ne null") == []


# -- sites, and no source ----------------------------------------------------------------------


def test_sms_site_lists_the_sites(stack: Stack, api: Api) -> None:
    stack.site_db.register_sites(["PS3"])  # registered, no message yet
    rows = api.values("SMS_Site")
    assert [r["SiteCode"] for r in rows] == ["PS1", "PS2", "PS3"]
    assert all(r["Type"] == 2 and r["Status"] == 1 and r["Version"] for r in rows)
    assert api.values("SMS_Site", filter="SiteCode eq 'ps2'", select="SiteCode") == [
        {"SiteCode": "PS2"}
    ]


def test_without_a_source_the_classes_are_empty(make_api: Callable[..., Api]) -> None:
    api = make_api(None)
    for entity_set in (WITH_STRINGS, "SMS_StatusMessage", "SMS_StatMsgInsStrings", "SMS_Site"):
        assert api.values(entity_set) == []
    assert api.values(WITH_STRINGS, filter="MessageID eq 39997", top="5") == []
    query = api.sim.status_message_queries()[-1]
    assert query.message_ids == frozenset({39997}) and query.top == 5 and query.selective
    with pytest.raises(RuntimeError):
        api.sim.set_status_message_resource_id(1, 2)


def test_a_database_outage_is_500_and_heals(
    workload: Workload, make_api: Callable[..., Api], local_ca: LocalCA
) -> None:
    with SiteDatabase(ca=local_ca) as database:
        database.insert_status_messages(workload.messages[:20])
        api = make_api(database)
        assert len(api.values("SMS_StatusMessage", top="5")) == 5  # a pooled connection
        database.stop(keep_data=True)
        assert_odata_error(api.get("SMS_StatusMessage", top="5"), 500, "0x80041001")
        database.start()
        assert len(api.values("SMS_StatusMessage", top="5")) == 5


# -- the grammar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RecordID gt 5", [10, 2**60]),
        ("RecordID ge 10 and RecordID lt 1152921504606846976", [10]),
        ("RecordID le 1152921504606846976", [5, 10, 2**60]),
        ("RecordID eq 1152921504606846976", [2**60]),  # past 2^53, exact
        ("RecordID ne 10", [5, 2**60]),
        ("ProcessID gt 0", [5, 2**60]),
        ("ProcessID ne 7", [5, 10]),
        ("ProcessID eq null", [10]),
        ("Time ge 2026-11-20T08:00:00Z", [10, 2**60]),
        ("Time gt 2026-11-20T08:00:00.12Z", [2**60]),
        ("Time lt 2026-11-20T09:00:00.5+01:00", [5, 10]),  # 08:00:00.5 UTC
        ("Time le 2026-11-20T08:00Z", [5]),
        ("(RecordID eq 5 or Time gt 2026-11-20T08:00:00Z) and MessageID eq 39997", [5, 2**60]),
    ],
)
def test_comparison_operators(text: str, expected: list[int]) -> None:
    rows: list[dict[str, Any]] = [
        {"RecordID": 5, "ProcessID": 8, "Time": "2026-11-19T23:59:59.99Z", "MessageID": 39997},
        {"RecordID": 10, "ProcessID": None, "Time": "2026-11-20T08:00:00.12Z", "MessageID": 0},
        {"RecordID": 2**60, "ProcessID": 7, "Time": "2026-11-21T00:00:00Z", "MessageID": 39997},
    ]
    predicate = parse_filter(text, WITH_STRINGS)
    assert [row["RecordID"] for row in rows if predicate(row)] == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("MachineName gt 'PC'", "'gt'"),
        ("SiteCode ne 'PS1'", "'ne'"),
        ("RecordID gt null", "null"),
        ("Time ge '2026-11-20T08:00:00Z'", "incompatible"),
        ("Time ge 2026-11-20", "incompatible"),  # the number 2026, then the rest
        ("Time ge 2026-11-20T08:00:00", "syntax"),
        ("Time ge 2026-13-20T08:00:00Z", "Edm.DateTimeOffset"),
        ("RecordID gt 2026-11-20T08:00:00Z", "incompatible"),
        ("Time eq 5", "incompatible"),
        ("MessageID has 1", "not supported"),
        ("RecordID gt 9223372036854775808", "range"),
    ],
)
def test_grammar_errors_are_400(text: str, fragment: str) -> None:
    with pytest.raises(ODataError) as caught:
        parse_filter(text, WITH_STRINGS)
    assert caught.value.status == 400
    assert fragment.lower() in caught.value.message.lower(), caught.value.message
