"""Membership in the AdminService simulator: mirrored into the site database stand-in's
v_FullCollectionMembership, duplicate rules kept on demand, answer sizes in the call log,
and targeted membership queries that stay cheap on a 20,000-member collection."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyodbc
import pytest
import requests

from devstack.adminservice import AdminServiceSimulator, TokenSigner, parse_filter
from devstack.sitedb import SiteDatabase
from tests.helpers import device

pytestmark = pytest.mark.stack

ISSUER = "https://sts.windows.net/8d5c7a5e-0000-4000-8000-000000000013/"
ADMIN = "cm-svc@contoso.com"
DIRECT = "#AdminService.SMS_CollectionRuleDirect"
MEMBERSHIP = "wmi/SMS_FullCollectionMembership"
DEVICES = [device(16777219 + i, f"PC{i + 1:02d}") for i in range(6)]
PC01, PC02, PC03 = 16777219, 16777220, 16777221
COLLECTIONS = {"PS100123": "Project reinstall", "PS100124": "Visio reinstall"}
BIG = range(16800000, 16820000)  # 20,000 ResourceIDs


def rule_body(resource_id: int, name: str = "PC") -> dict[str, Any]:
    return {
        "collectionRule": {
            "@odata.type": DIRECT,
            "ResourceClassName": "SMS_R_System",
            "RuleName": name,
            "ResourceID": resource_id,
        }
    }


def or_chain(collection_id: str, resource_ids: list[int]) -> str:
    terms = " or ".join(f"ResourceID eq {rid}" for rid in resource_ids)
    return f"CollectionID eq '{collection_id}' and ({terms})"


# -- fixtures ------------------------------------------------------------------------------


class Api:
    """Calls against one simulator with one session and token."""

    def __init__(self, http: requests.Session, sim: AdminServiceSimulator, token: str) -> None:
        self.http, self.sim, self.token = http, sim, token

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.http.request(method, self.sim.cmg_url + path, headers=headers, timeout=30, **kw)

    def action(self, collection_id: str, action: str, body: Any) -> requests.Response:
        path = f"wmi/SMS_Collection('{collection_id}')/AdminService.{action}"
        return self.request("POST", path, json=body)

    def add(self, collection_id: str, resource_id: int) -> requests.Response:
        return self.action(collection_id, "AddMembershipRule", rule_body(resource_id))

    def delete(self, collection_id: str, resource_id: int) -> requests.Response:
        return self.action(collection_id, "DeleteMembershipRule", rule_body(resource_id))

    def members(self, filter_text: str) -> list[dict[str, Any]]:
        response = self.request("GET", MEMBERSHIP, params={"$filter": filter_text})
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["value"]
        return rows


@pytest.fixture
def make_api(
    start_simulator: Callable[..., AdminServiceSimulator],
    trusting_session: requests.Session,
    signer: TokenSigner,
) -> Callable[..., Api]:
    token = signer.token(issuer=ISSUER, upn=ADMIN)

    def make(**options: Any) -> Api:
        options.setdefault("devices", DEVICES)
        options.setdefault("collections", COLLECTIONS)
        simulator = start_simulator(issuer=ISSUER, admins=[ADMIN], **options)
        return Api(trusting_session, simulator, token)

    return make


def view_rows(reader: pyodbc.Connection, collection_id: str) -> dict[int, tuple[int, str | None]]:
    cursor = reader.execute(
        "SELECT ResourceID, IsDirect, Name FROM v_FullCollectionMembership "
        "WHERE CollectionID = ? ORDER BY ResourceID",
        collection_id,
    )
    return {int(r[0]): (int(r[1]), r[2]) for r in cursor.fetchall()}


class RecordingMirror:
    """A membership mirror that records each write (and can fail)."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, ...]] = []
        self.fail = False

    def set_collection_members(
        self,
        collection_id: str,
        members: Mapping[int, bool],
        *,
        names: Mapping[int, str | None] | None = None,
    ) -> None:
        self._write("set", collection_id, str(len(members)))

    def apply_membership_change(
        self,
        collection_id: str,
        resource_id: int,
        is_direct: bool | None,
        *,
        name: str | None = None,
    ) -> None:
        self._write("change", collection_id, str(resource_id), str(is_direct))

    def _write(self, *write: str) -> None:
        if self.fail:
            raise pyodbc.OperationalError("08S01", "the site database went away")
        self.writes.append(write)


# -- the mirror in v_FullCollectionMembership ---------------------------------------------


def test_add_and_delete_are_in_the_view_before_the_answer(
    make_api: Callable[..., Api], db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    api = make_api(site_database=db)
    assert view_rows(reader, "PS100123") == {}
    assert api.add("PS100123", PC01).status_code == 201
    assert view_rows(reader, "PS100123") == {PC01: (1, "PC01")}
    row = reader.execute(
        "SELECT CollectionID, SiteCode FROM v_FullCollectionMembership WHERE ResourceID = ?", PC01
    ).fetchone()
    assert tuple(row) == ("PS100123", "PS1")
    assert api.add("ps100123", PC02).status_code == 201
    assert api.delete("PS100123", PC01).status_code == 201
    assert view_rows(reader, "PS100123") == {PC02: (1, "PC02")}
    assert view_rows(reader, "PS100124") == {}


def test_set_direct_members_and_refresh_mirror_the_whole_collection(
    make_api: Callable[..., Api], db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    db.set_collection_members("PS100123", {99: True})  # left over from an earlier scenario
    api = make_api(site_database=db)
    assert view_rows(reader, "PS100123") == {}  # emptied when the simulator was built
    api.sim.set_direct_members("PS100123", [PC01, PC02, PC02, 424242])
    assert view_rows(reader, "PS100123") == {
        PC01: (1, "PC01"),
        PC02: (1, "PC02"),
        424242: (1, None),
    }
    api.sim.set_direct_members("PS100123", [PC03])
    assert view_rows(reader, "PS100123") == {PC03: (1, "PC03")}
    db.set_collection_members("PS100123", {})  # someone wiped it: a refresh writes it again
    assert api.action("PS100123", "RequestRefresh", {}).status_code == 201
    assert view_rows(reader, "PS100123") == {PC03: (1, "PC03")}


def test_membership_needs_refresh_changes_rows_only_at_refresh(
    make_api: Callable[..., Api], db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    api = make_api(site_database=db, membership_needs_refresh=True)
    api.sim.set_direct_members("PS100123", [PC01])
    assert api.add("PS100123", PC02).status_code == 201
    assert api.delete("PS100123", PC01).status_code == 201
    assert view_rows(reader, "PS100123") == {PC01: (1, "PC01")}  # as last evaluated
    assert [r["ResourceID"] for r in api.members("CollectionID eq 'PS100123'")] == [PC01]
    assert api.action("PS100123", "RequestRefresh", {}).status_code == 201
    assert view_rows(reader, "PS100123") == {PC02: (1, "PC02")}
    assert [r["ResourceID"] for r in api.members("CollectionID eq 'PS100123'")] == [PC02]


def test_an_add_writes_one_row_not_the_collection() -> None:
    mirror = RecordingMirror()
    from devstack.adminservice.site import Site

    site = Site(DEVICES, {"PS100123": "x"}, mirror=mirror)
    site.set_direct_members("PS100123", BIG)
    mirror.writes.clear()
    site.add_rule("PS100123", PC01, "PC01", evaluate=True)
    site.add_rule("PS100123", PC01, "PC01", evaluate=True)  # a duplicate changes nothing
    site.delete_rule("PS100123", 16800000, evaluate=True)
    site.delete_rule("PS100123", 16800000, evaluate=True)  # nothing left to delete
    assert mirror.writes == [
        ("change", "PS100123", str(PC01), "True"),
        ("change", "PS100123", "16800000", "None"),
    ]
    site.add_rule("PS100123", PC02, "PC02", evaluate=False)  # left unevaluated ...
    site.add_rule("PS100123", PC03, "PC03", evaluate=True)  # ... so this evaluates it all
    assert mirror.writes[-1] == ("set", "PS100123", str(len(BIG) + 2))


def test_a_failing_mirror_write_is_500_and_changes_nothing(make_api: Callable[..., Api]) -> None:
    mirror = RecordingMirror()
    api = make_api(site_database=mirror)
    mirror.fail = True
    response = api.add("PS100123", PC01)
    assert response.status_code == 500 and "0x80041001" in response.json()["error"]["message"]
    assert api.sim.direct_members("PS100123") == set() and api.sim.members("PS100123") == set()
    mirror.fail = False
    assert api.add("PS100123", PC01).status_code == 201
    assert api.sim.members("PS100123") == {PC01}


def test_concurrent_adds_all_reach_the_view(
    make_api: Callable[..., Api], db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    devices = [device(20000000 + i, f"WS-{i:03d}") for i in range(40)]
    api = make_api(site_database=db, devices=devices)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda d: api.add("PS100123", d.resource_id).status_code, devices))
    assert statuses == [201] * 40
    assert set(view_rows(reader, "PS100123")) == {d.resource_id for d in devices}


# -- duplicate rules kept ---------------------------------------------------------------------


def test_keep_duplicates_lists_the_rule_twice(
    make_api: Callable[..., Api], db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    api = make_api(duplicate_add="keep", site_database=db)
    for _ in range(2):
        response = api.add("PS100123", PC01)
        assert response.status_code == 201 and response.json()["ReturnValue"] == 0
    assert api.add("PS100123", PC02).status_code == 201
    (entity,) = api.request("GET", "wmi/SMS_Collection('PS100123')").json()["value"]
    assert [rule["ResourceID"] for rule in entity["CollectionRules"]] == [PC01, PC01, PC02]
    assert entity["MemberCount"] == 2
    assert api.sim.direct_rule_counts("PS100123") == Counter({PC01: 2, PC02: 1})
    assert api.sim.successful_adds()[("PS100123", PC01)] == 2
    assert [r["ResourceID"] for r in api.members(f"ResourceID eq {PC01}")] == [PC01]  # one row
    assert view_rows(reader, "PS100123") == {PC01: (1, "PC01"), PC02: (1, "PC02")}
    # One delete takes every rule of the resource, and the resource, out.
    assert api.delete("PS100123", PC01).status_code == 201
    assert api.sim.direct_rule_counts("PS100123") == Counter({PC02: 1})
    assert api.members(f"ResourceID eq {PC01}") == []
    assert view_rows(reader, "PS100123") == {PC02: (1, "PC02")}


@pytest.mark.parametrize("mode", ["error", "ok"])
def test_other_duplicate_modes_keep_one_rule(make_api: Callable[..., Api], mode: str) -> None:
    api = make_api(duplicate_add=mode)
    assert api.add("PS100123", PC01).status_code == 201
    assert api.add("PS100123", PC01).status_code == (500 if mode == "error" else 201)
    assert api.sim.direct_rule_counts("PS100123") == Counter({PC01: 1})


# -- answer sizes -------------------------------------------------------------------------


def test_response_bytes_are_logged(make_api: Callable[..., Api]) -> None:
    api = make_api()
    responses = [
        api.request("GET", "v1.0/$metadata"),
        api.add("PS100123", PC01),
        api.request("GET", MEMBERSHIP, params={"$filter": "Bogus eq 1"}),
        api.request("GET", "wmi/SMS_Collection('PS100123')"),
    ]
    api.sim.reset_connections_next(1)
    with pytest.raises(requests.ConnectionError):
        api.request("GET", "v1.0/$metadata")
    calls = api.sim.calls
    assert [c.response_bytes for c in calls[:4]] == [len(r.content) for r in responses]
    assert all(c.response_bytes > 0 for c in calls[:4])
    assert calls[4].status == 0 and calls[4].response_bytes == 0
    by_route = Counter[str]()
    for call in calls:
        by_route[call.route or ""] += call.response_bytes
    assert by_route["SMS_FullCollectionMembership"] == len(responses[2].content)


# -- targeted queries on a large collection --------------------------------------------------


def test_targeted_queries_on_twenty_thousand_members(
    make_api: Callable[..., Api], db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    api = make_api(site_database=db)
    began = time.perf_counter()
    api.sim.set_direct_members("PS100123", BIG)
    elapsed = time.perf_counter() - began
    assert elapsed < 2.0, f"set_direct_members of 20,000 took {elapsed:.2f}s"
    assert len(view_rows(reader, "PS100123")) == 20_000
    api.sim.set_direct_members("PS100124", [16800005, PC01])

    one = api.members("CollectionID eq 'ps100123' and ResourceID eq 16800005")
    assert one == [
        {"CollectionID": "PS100123", "ResourceID": 16800005, "Name": None, "IsDirect": True}
    ]
    assert api.members(f"CollectionID eq 'PS100123' and ResourceID eq {PC01}") == []
    asked = [16820000 + i for i in range(50)] + [16800000 + 400 * i for i in range(50)]
    rows = api.members(or_chain("PS100123", asked))
    assert [r["ResourceID"] for r in rows] == sorted(r for r in asked if r in BIG)
    assert {r["CollectionID"] for r in rows} == {"PS100123"}
    # Only the rows the filter can match are built: a query costs milliseconds, where
    # building and filtering all 20,000 rows would take about half a second each.
    began = time.perf_counter()
    for _ in range(5):
        assert len(api.members(or_chain("PS100123", asked))) == 50
    assert time.perf_counter() - began < 1.0

    targeted = api.sim.calls[-1].response_bytes
    api.request("GET", "wmi/SMS_Collection('PS100123')")
    whole = api.sim.calls[-1].response_bytes
    assert targeted < 10_000 and whole > 1_000_000, (targeted, whole)


def test_narrowed_answers_equal_the_whole_filter() -> None:
    """Building only the rows a filter can match changes no answer."""
    from devstack.adminservice.site import Site

    site = Site(DEVICES, {"PS100123": "a", "PS100124": "b", "XY100001": "c"})
    site.set_direct_members("PS100123", [PC01, PC02, PC03])
    site.set_direct_members("PS100124", [PC02, 16777224])
    site.set_direct_members("XY100001", [PC01])
    everything = site.memberships()
    assert len(everything) == 6
    filters = [
        "CollectionID eq 'ps100123'",
        f"CollectionID eq 'PS100123' and ResourceID eq {PC02}",
        f"CollectionID eq 'PS100123' and (ResourceID eq {PC01} or ResourceID eq 16777224)",
        f"(CollectionID eq 'PS100124' or CollectionID eq 'xy100001') and ResourceID ne {PC02}",
        "CollectionID eq 'PS100123' and CollectionID eq 'ps100123'",
        "CollectionID eq 'PS100123' and CollectionID eq 'PS100124'",
        "tolower(CollectionID) eq 'ps100124'",
        f"ResourceID eq {PC01} or CollectionID eq 'PS100124'",
        f"((ResourceID eq {PC02}) or (ResourceID eq {PC03})) and IsDirect eq true",
        f"(CollectionID eq 'PS100123' and ResourceID eq {PC01}) or ResourceID eq 16777224",
        "ResourceID gt 16777220",
        "CollectionID eq 'PS199999' or ResourceID eq 1",
        "Name eq 'pc02'",
    ]
    from devstack.adminservice.filter import equality_scope

    for text in filters:
        predicate = parse_filter(text, "SMS_FullCollectionMembership")
        narrowed = site.memberships(
            equality_scope(predicate, "CollectionID"), equality_scope(predicate, "ResourceID")
        )
        expected = [row for row in everything if predicate(row)]
        assert [row for row in narrowed if predicate(row)] == expected, text


def test_long_or_chains_parse(make_api: Callable[..., Api]) -> None:
    for count in (1, 2, 100, 300):
        parse_filter(
            or_chain("PS100123", list(range(1, count + 1))), "SMS_FullCollectionMembership"
        )
    nested = (
        "CollectionID eq 'PS100123' and ((ResourceID eq 1 or ResourceID eq 2) or (ResourceID eq 3))"
    )
    parse_filter(nested, "SMS_FullCollectionMembership")
    api = make_api()
    api.sim.set_direct_members("PS100123", [PC02])
    assert [r["ResourceID"] for r in api.members(or_chain("PS100123", [*range(1, 100), PC02]))] == [
        PC02
    ]


def test_max_filter_nodes_refuses_a_long_chain(make_api: Callable[..., Api]) -> None:
    api = make_api(max_filter_nodes=100)
    api.sim.set_direct_members("PS100123", [PC01])
    # CollectionID eq 'X' and (...): 5 nodes, then 5 per ResourceID term and 1 per or.
    assert [r["ResourceID"] for r in api.members(or_chain("PS100123", [PC01, *range(1, 16)]))] == [
        PC01
    ]
    response = api.request(
        "GET", MEMBERSHIP, params={"$filter": or_chain("PS100123", [PC01, *range(1, 17)])}
    )
    assert response.status_code == 400
    assert "node count limit of '100'" in response.json()["error"]["message"]
