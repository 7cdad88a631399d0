"""The AdminService simulator over real HTTPS: OData answers, strict token checks, faults."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import requests

from devstack.adminservice import (
    AdminServiceSimulator,
    JwksServer,
    ODataError,
    TokenSigner,
    parse_filter,
)
from devstack.datagen import GeneratedDevice
from devstack.ports import free_port
from devstack.tls import LocalCA
from tests.helpers import device

ISSUER = "https://sts.windows.net/8d5c7a5e-0000-4000-8000-000000000001/"
ADMIN = "cm-svc@contoso.com"
API_AUDIENCE = "api://8d5c7a5e-0000-4000-8000-000000000001/5f0e0000-0000-4000-8000-0000000000aa"
DIRECT = "#AdminService.SMS_CollectionRuleDirect"


#: The records of this module: full_domain and creation_date show in the answers.
_device = partial(device, full_domain="contoso.com", creation_date=datetime(2024, 6, 1, 9, 30))


DEVICES = [
    _device(16777219, "PC01"),
    _device(16777220, "PC02"),
    _device(16777221, "O'Brien's PC"),
    _device(16777222, "Ñandú-PC"),
    _device(16777223, "ПК-ОФИС"),
    _device(16777224, "A+B 100%25"),  # a literal '+' and '%25': decoded exactly once
    _device(16777225, "LT-10001", active=0, obsolete=1),
    _device(16777226, "LT-10001", obsolete=None),
    _device(16777227, "x"),
]
COLLECTIONS = {"PS100123": "Project reinstall", "PS100124": "Visio reinstall", "SMS00001": "All"}


def odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def rule_body(resource_id: int, name: str = "PC01", **overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "@odata.type": DIRECT,
        "ResourceClassName": "SMS_R_System",
        "RuleName": name,
        "ResourceID": resource_id,
    }
    rule.update(overrides)
    return {"collectionRule": rule}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA()


@pytest.fixture(scope="module")
def signer() -> TokenSigner:
    return TokenSigner()


@pytest.fixture(scope="module")
def jwks(ca: LocalCA, signer: TokenSigner) -> Iterator[JwksServer]:
    with JwksServer(ca, [signer]) as server:
        yield server


@pytest.fixture
def make_sim(ca: LocalCA, jwks: JwksServer) -> Iterator[Callable[..., AdminServiceSimulator]]:
    started: list[AdminServiceSimulator] = []

    def make(**options: Any) -> AdminServiceSimulator:
        options.setdefault("jwks_uri", jwks.url)
        options.setdefault("issuer", ISSUER)
        options.setdefault("admins", [ADMIN])
        options.setdefault("devices", DEVICES)
        options.setdefault("collections", COLLECTIONS)
        simulator = AdminServiceSimulator(ca, **options).start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()
        assert simulator.internal_errors == []


@pytest.fixture
def sim(make_sim: Callable[..., AdminServiceSimulator]) -> AdminServiceSimulator:
    return make_sim()


@pytest.fixture
def http(ca: LocalCA) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
    session.verify = str(ca.bundle_path)
    yield session
    session.close()


@pytest.fixture
def token(signer: TokenSigner) -> str:
    return signer.token(issuer=ISSUER, upn=ADMIN)


class Api:
    """Calls against one simulator with one session and token."""

    def __init__(self, http: requests.Session, sim: AdminServiceSimulator, token: str | None):
        self.http, self.sim, self.token = http, sim, token

    def request(
        self, method: str, path: str, *, base: str | None = None, token: str | None = "", **kw: Any
    ) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        bearer = self.token if token == "" else token
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        kw.setdefault("timeout", 10)
        return self.http.request(method, (base or self.sim.cmg_url) + path, headers=headers, **kw)

    def find(self, filter_text: str, select: str | None = None) -> requests.Response:
        params = {"$filter": filter_text}
        if select is not None:
            params["$select"] = select
        return self.request("GET", "wmi/SMS_R_System", params=params)

    def ids(self, filter_text: str) -> list[int]:
        response = self.find(filter_text)
        assert response.status_code == 200, response.text
        return [row["ResourceId"] for row in response.json()["value"]]

    def action(
        self, collection_id: str, action: str, body: Any = None, **kw: Any
    ) -> requests.Response:
        path = f"wmi/SMS_Collection({odata_string(collection_id)})/AdminService.{action}"
        return self.request("POST", path, json=body, **kw)

    def is_member(self, collection_id: str, resource_id: int) -> bool:
        text = f"CollectionID eq {odata_string(collection_id)} and ResourceID eq {resource_id}"
        response = self.request("GET", "wmi/SMS_FullCollectionMembership", params={"$filter": text})
        assert response.status_code == 200, response.text
        return bool(response.json()["value"])

    def collection(self, collection_id: str) -> requests.Response:
        return self.request("GET", f"wmi/SMS_Collection({odata_string(collection_id)})")


@pytest.fixture
def api(http: requests.Session, sim: AdminServiceSimulator, token: str) -> Api:
    return Api(http, sim, token)


def assert_odata_error(response: requests.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message"} and error["code"]
    for fragment in fragments:
        assert fragment.lower() in error["message"].lower(), error["message"]


# -- metadata and base URLs ------------------------------------------------------------


def test_metadata_answers_on_all_three_base_urls(api: Api, sim: AdminServiceSimulator) -> None:
    assert sim.cmg_url.endswith("/CCM_Proxy_ServerAuth/72057594037927939/AdminService/")
    for base in sim.base_urls:
        response = api.request("GET", "v1.0/$metadata", base=base)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/xml")
        assert "<edmx:Edmx" in response.text and 'EntitySet Name="SMS_R_System"' in response.text
    lower = sim.base_url.replace("/AdminService/", "/adminservice/")
    assert api.request("GET", "v1.0/$metadata", base=lower).status_code == 200


# -- finding devices ---------------------------------------------------------------------


def test_find_by_name_is_case_insensitive_and_selects(api: Api, sim: AdminServiceSimulator) -> None:
    response = api.find("Name eq 'pc01'", select="ResourceId,Name,Obsolete")
    assert response.status_code == 200
    assert response.headers["OData-Version"] == "4.0"
    document = response.json()
    assert document["@odata.context"] == (
        f"{sim.cmg_url}wmi/$metadata#SMS_R_System(ResourceId,Name,Obsolete)"
    )
    assert document["value"] == [{"ResourceId": 16777219, "Name": "PC01", "Obsolete": 0}]


def test_full_record_uses_wmi_names(api: Api) -> None:
    (record,) = api.find("NetbiosName eq 'LT-10001' and Obsolete eq null").json()["value"]
    assert record == {
        "ResourceId": 16777226,
        "Name": "LT-10001",
        "NetbiosName": "LT-10001",
        "SMSUniqueIdentifier": "GUID:0100000A-0000-0000-0000-000000000000",
        "ResourceDomainORWorkgroup": "CONTOSO",
        "FullDomainName": "contoso.com",
        "Client": 1,
        "Active": 1,
        "Obsolete": None,
        "Decommissioned": 0,
        "CreationDate": "2024-06-01T09:30:00Z",
    }
    assert api.ids("Name eq 'LT-10001'") == [16777225, 16777226]  # duplicates are normal


def test_doubled_quote_escapes_a_quote(api: Api) -> None:
    assert api.ids("Name eq " + odata_string("O'Brien's PC")) == [16777221]
    assert api.ids("Name eq " + odata_string("o'brien's pc")) == [16777221]


@pytest.mark.parametrize(
    ("name", "resource_id"),
    [("ñandú-pc", 16777222), ("пк-офис", 16777223), ("A+B 100%25", 16777224)],
)
def test_url_decoding_is_exact(api: Api, name: str, resource_id: int) -> None:
    # requests encodes the query (UTF-8 percent-encoding, '+' as %2B, '%' as %25).
    assert api.ids(f"Name eq {odata_string(name)}") == [resource_id]


def test_hand_encoded_query_plus_means_space(api: Api) -> None:
    response = api.request("GET", "wmi/SMS_R_System?$filter=Name+eq+%27PC02%27&$select=Name")
    assert response.json()["value"] == [{"Name": "PC02"}]
    encoded = quote("Name eq 'Ñandú-PC'", safe="")
    response = api.request("GET", f"wmi/SMS_R_System?%24filter={encoded}")
    assert [r["ResourceId"] for r in response.json()["value"]] == [16777222]


def test_invalid_utf8_in_the_query_is_400(api: Api) -> None:
    response = api.request("GET", "wmi/SMS_R_System?$filter=Name%20eq%20%27%FF%27")
    assert_odata_error(response, 400, "UTF-8")


@pytest.mark.parametrize(
    "hostile",
    [
        "' or 1 eq 1",
        "PC01' or Name eq 'x",
        "PC01' or '1' eq '1",
        "x') or (Name ne '",
        "' or Name eq Name or Name eq '",
        "PC01' or tolower(Name) eq tolower(Name) or Name eq '",
    ],
)
def test_injection_never_returns_every_device(api: Api, hostile: str) -> None:
    # Concatenated without escaping, as a careless client would: 400, or the few devices
    # the injected grammar names ('PC01' or 'x'), never a condition that is always true.
    naive = api.find(f"Name eq '{hostile}'")
    assert naive.status_code in (200, 400)
    if naive.status_code == 200:
        assert {r["Name"] for r in naive.json()["value"]} <= {"PC01", "x"}
    else:
        assert_odata_error(naive, 400)
    # Escaped, the whole string is one literal: no device has that name.
    assert api.ids(f"Name eq {odata_string(hostile)}") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tolower(Name) eq 'pc01'", [16777219]),
        ("toupper(Name) eq 'pc01'", [16777219]),
        ("ResourceId eq 16777220", [16777220]),
        ("(Name eq 'PC01' or Name eq 'pc02') and Client eq 1", [16777219, 16777220]),
        ("Name eq 'LT-10001' and (Obsolete eq 1 or Active eq 0)", [16777225]),
        ("((Name eq 'x'))", [16777227]),
        ("Name eq ''", []),
    ],
)
def test_filter_grammar(text: str, expected: list[int]) -> None:
    from devstack.adminservice.entities import _system_entity

    predicate = parse_filter(text, "SMS_R_System")
    assert [d.resource_id for d in DEVICES if predicate(_system_entity(d))] == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Name eq 'PC01", "unterminated"),
        ("Name eq PC01", "syntax"),
        ("Nme eq 'PC01'", "Nme"),
        ("trim(Name) eq 'PC01'", "unknown function"),
        ("Name ne 'PC01'", "'ne'"),
        ("Name eq 16777219", "incompatible"),
        ("ResourceId eq '16777219'", "incompatible"),
        ("tolower(ResourceId) eq 'x'", "function"),
        ("", "empty"),
        ("Name eq 'PC01' and", "syntax"),
        ("(Name eq 'PC01'", "syntax"),
        ("Name eq 'PC01')", "syntax"),
        ('Name eq "PC01"', "not valid"),
        ("Name eq 'PC01' or 1 eq 1", "syntax"),
        ("not Name eq 'PC01'", "syntax"),
        ("Name eq 'PC01';", "not valid"),
        ("CreationDate eq '2024-06-01'", "date"),
        ("Name eq 99999999999999999999", "range"),
        ("(" * 60 + "Name eq 'x'" + ")" * 60, "nested"),
    ],
)
def test_filter_errors_are_400(text: str, fragment: str) -> None:
    with pytest.raises(ODataError) as caught:
        parse_filter(text, "SMS_R_System")
    assert caught.value.status == 400
    assert fragment.lower() in caught.value.message.lower(), caught.value.message


def test_bad_query_options_are_400(api: Api) -> None:
    assert_odata_error(api.find("Name eq 'PC01'", select="Name,Bogus"), 400, "Bogus")
    assert_odata_error(api.find("Name eq 'PC01"), 400, "unterminated")
    response = api.request("GET", "wmi/SMS_R_System?$orderby=Name")
    assert_odata_error(response, 400, "$orderby")
    response = api.request("GET", "wmi/SMS_R_System?$filter=Name eq 'x'&$filter=Name eq 'y'")
    assert_odata_error(response, 400, "more than once")
    top = api.request("GET", "wmi/SMS_R_System?$top=2&$select=ResourceId").json()["value"]
    assert top == [{"ResourceId": 16777219}, {"ResourceId": 16777220}]


# -- collections and membership -------------------------------------------------------------


def test_membership_query(api: Api, sim: AdminServiceSimulator) -> None:
    sim.set_direct_members("PS100124", [16777220])
    text = "CollectionID eq 'PS100124' and ResourceID eq 16777220"
    response = api.request("GET", "wmi/SMS_FullCollectionMembership", params={"$filter": text})
    assert response.json()["value"] == [
        {"CollectionID": "PS100124", "ResourceID": 16777220, "Name": "PC02", "IsDirect": True}
    ]
    assert not api.is_member("PS100124", 16777219)
    assert not api.is_member("PS100123", 16777220)


def test_add_is_201_and_visible(api: Api, sim: AdminServiceSimulator) -> None:
    response = api.action("PS100123", "AddMembershipRule", rule_body(16777219))
    assert response.status_code == 201
    document = response.json()
    assert document["ReturnValue"] == 0 and document["QueryID"] == 0
    assert document["@odata.context"].startswith(sim.cmg_url + "wmi/$metadata#")
    assert api.is_member("PS100123", 16777219)
    assert sim.direct_members("PS100123") == {16777219}

    (entity,) = api.collection("PS100123").json()["value"]
    assert entity["CollectionID"] == "PS100123" and entity["MemberCount"] == 1
    assert entity["CollectionRules"] == [
        {
            "@odata.type": DIRECT,
            "RuleName": "PC01",
            "ResourceID": 16777219,
            "ResourceClassName": "SMS_R_System",
        }
    ]
    listed = api.request(
        "GET", "wmi/SMS_Collection", params={"$filter": "CollectionID eq 'PS100123'"}
    ).json()["value"]
    assert listed == [
        {
            "CollectionID": "PS100123",
            "Name": "Project reinstall",
            "MemberCount": 1,
            "CollectionType": 2,
            "LimitToCollectionID": "SMS00001",
        }
    ]  # the lazy CollectionRules only on the key GET


def test_key_as_segment_and_lower_case_key(api: Api, sim: AdminServiceSimulator) -> None:
    path = "wmi/SMS_Collection/PS100123/AdminService.AddMembershipRule"
    assert api.request("POST", path, json=rule_body(16777220, "PC02")).status_code == 201
    assert api.action("ps100123", "AddMembershipRule", rule_body(16777219)).status_code == 201
    assert sim.direct_members("PS100123") == {16777219, 16777220}


def test_key_get_shapes_and_unknown_key(
    make_sim: Callable[..., AdminServiceSimulator], http: requests.Session, token: str
) -> None:
    default = Api(http, make_sim(), token)
    assert_odata_error(default.collection("PS199999"), 404, "PS199999")
    entity_sim = Api(http, make_sim(key_get_shape="entity", missing_key="empty"), token)
    document = entity_sim.collection("PS100123").json()
    assert document["CollectionID"] == "PS100123" and document["CollectionRules"] == []
    assert document["@odata.context"].endswith("#SMS_Collection/$entity")
    missing = entity_sim.collection("PS199999")
    assert missing.status_code == 200 and missing.json()["value"] == []


@pytest.mark.parametrize("mode", ["error", "ok"])
def test_duplicate_add(
    make_sim: Callable[..., AdminServiceSimulator],
    http: requests.Session,
    token: str,
    mode: str,
) -> None:
    sim = make_sim(duplicate_add=mode)
    api = Api(http, sim, token)
    assert api.action("PS100123", "AddMembershipRule", rule_body(16777219)).status_code == 201
    again = api.action("PS100123", "AddMembershipRule", rule_body(16777219, "renamed"))
    if mode == "error":
        assert_odata_error(again, 500, "already exists", "0x80041019")
    else:
        assert again.status_code == 201 and again.json()["ReturnValue"] == 0
    (entity,) = api.collection("PS100123").json()["value"]
    assert [rule["RuleName"] for rule in entity["CollectionRules"]] == ["PC01"]
    assert sim.count_calls("AddMembershipRule", collection_id="PS100123", resource_id=16777219) == 2


@pytest.mark.parametrize("mode", ["error", "ok"])
def test_delete(
    make_sim: Callable[..., AdminServiceSimulator],
    http: requests.Session,
    token: str,
    mode: str,
) -> None:
    sim = make_sim(delete_missing=mode)
    api = Api(http, sim, token)
    sim.set_direct_members("PS100123", [16777219, 16777220])
    response = api.action("PS100123", "DeleteMembershipRule", rule_body(16777219))
    assert response.status_code == 201 and response.json()["ReturnValue"] == 0
    assert not api.is_member("PS100123", 16777219)
    assert sim.direct_members("PS100123") == {16777220}
    missing = api.action("PS100123", "DeleteMembershipRule", rule_body(16777219))
    if mode == "error":
        assert_odata_error(missing, 500, "not found", "0x80041002")
    else:
        assert missing.status_code == 201 and missing.json()["ReturnValue"] == 0


def test_membership_after_refresh_and_refresh_counting(
    make_sim: Callable[..., AdminServiceSimulator], http: requests.Session, token: str
) -> None:
    sim = make_sim(membership_needs_refresh=True)
    api = Api(http, sim, token)
    for resource_id in (16777219, 16777220):
        assert (
            api.action("PS100123", "AddMembershipRule", rule_body(resource_id)).status_code == 201
        )
    assert not api.is_member("PS100123", 16777219)  # the rule exists, evaluation has not run
    assert sim.direct_members("PS100123") == {16777219, 16777220}
    refresh = api.action("PS100123", "RequestRefresh", {})
    assert refresh.status_code == 201 and refresh.json()["ReturnValue"] == 0
    assert api.is_member("PS100123", 16777219) and api.is_member("PS100123", 16777220)
    assert sim.count_calls("RequestRefresh", collection_id="PS100123") == 1
    assert sim.count_calls("RequestRefresh", collection_id="PS100124") == 0
    assert sim.count_calls("AddMembershipRule", collection_id="PS100123") == 2
    assert api.action("PS100123", "RequestRefresh", {"Bogus": 1}).status_code == 400


def test_plural_add_is_refused(api: Api, sim: AdminServiceSimulator) -> None:
    body = {"collectionRules": [rule_body(16777219)["collectionRule"]]}
    assert_odata_error(api.action("PS100123", "AddMembershipRules", body), 500, "failed")
    assert sim.direct_members("PS100123") == set()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({}, 400, "collectionRule"),
        ({"collectionRule": "x"}, 400, "collectionRule"),
        (
            rule_body(16777219, **{"@odata.type": "#AdminService.SMS_CollectionRuleQuery"}),
            400,
            "type",
        ),
        (
            {"collectionRule": {"ResourceClassName": "SMS_R_System", "ResourceID": 16777219}},
            400,
            "@odata.type",
        ),
        (rule_body(16777219, ResourceClassName="SMS_R_User"), 500, "SMS_R_User"),
        (rule_body(16777219, ResourceID="16777219"), 400, "Edm.Int64"),
        (rule_body(16777219, ResourceID=True), 400, "Edm.Int64"),
        (rule_body(16777219, ResourceID=16777219.5), 400, "Edm.Int64"),
        (rule_body(16777219, ResourceID=-1), 400, "range"),
        (rule_body(99), 500, "not an SMS_R_System resource"),
        (rule_body(16777219, Extra=1), 400, "Extra"),
        ({**rule_body(16777219), "other": 1}, 400, "other"),
        ([rule_body(16777219)], 400, "object"),
    ],
)
def test_add_body_is_validated(
    api: Api, sim: AdminServiceSimulator, body: Any, status: int, fragment: str
) -> None:
    assert_odata_error(api.action("PS100123", "AddMembershipRule", body), status, fragment)
    assert sim.direct_members("PS100123") == set()


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ('{"collectionRule": {}, "collectionRule": {}}', "application/json", 400),
        ('{"collectionRule": NaN}', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        ('{"collectionRule": {}}', "text/plain", 415),
        ('{"collectionRule": {}}', "application/json; charset=latin-1", 415),
    ],
)
def test_raw_bodies_are_validated(api: Api, data: Any, content_type: str, status: int) -> None:
    path = "wmi/SMS_Collection('PS100123')/AdminService.AddMembershipRule"
    response = api.request("POST", path, data=data, headers={"Content-Type": content_type})
    assert_odata_error(response, status)


def test_unknown_and_builtin_collections(api: Api) -> None:
    assert_odata_error(api.action("PS199999", "AddMembershipRule", rule_body(16777219)), 404)
    assert_odata_error(api.action("PS199999", "RequestRefresh", {}), 404)
    response = api.action("SMS00001", "AddMembershipRule", rule_body(16777219))
    assert_odata_error(response, 500, "built-in")


def test_unknown_routes_and_wrong_methods(api: Api, sim: AdminServiceSimulator) -> None:
    assert_odata_error(api.request("GET", "wmi/SMS_Foo"), 404)
    assert_odata_error(api.request("GET", "v1.0/Device"), 404)
    assert_odata_error(api.request("POST", "wmi/SMS_Collection('PS100123')/AdminService.Nope"), 404)
    outside = api.request("GET", "Other/v1.0/$metadata", base=f"https://localhost:{sim.port}/")
    assert_odata_error(outside, 404)
    wrong = api.request("GET", "wmi/SMS_Collection('PS100123')/AdminService.AddMembershipRule")
    assert_odata_error(wrong, 405)
    assert wrong.headers["Allow"] == "POST"
    post = api.request("POST", "wmi/SMS_R_System", json={})
    assert post.status_code == 405 and post.headers["Allow"] == "GET"
    assert api.request("DELETE", "v1.0/$metadata").status_code == 405
    assert api.request("PATCH", "wmi/SMS_Collection('PS100123')", json={}).status_code == 405
    assert_odata_error(api.request("BREW", "v1.0/$metadata"), 501)
    assert_odata_error(api.request("GET", "wmi/SMS_Collection(PS100123)"), 400)


# -- authentication ------------------------------------------------------------------------


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": "https://ConfigMgrService",
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "upn": ADMIN,
        "scp": "user_impersonation",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


AUTH_CASES: dict[str, tuple[Callable[[TokenSigner], str | None], int, str]] = {
    "no header": (lambda s: None, 401, ""),
    "not a jwt": (lambda s: "abc.def", 401, "malformed"),
    "bad signature": (
        lambda s: TokenSigner(kid=s.kid).sign(_claims()),
        401,
        "signature is invalid",
    ),
    "unknown key": (lambda s: TokenSigner().sign(_claims()), 401, "key was not found"),
    "wrong issuer": (
        lambda s: s.sign(_claims(iss="https://sts.windows.net/other/")),
        401,
        "issuer",
    ),
    "wrong audience": (
        lambda s: s.sign(_claims(aud="https://graph.microsoft.com")),
        401,
        "audience",
    ),
    "api audience not configured": (lambda s: s.sign(_claims(aud=API_AUDIENCE)), 401, "audience"),
    "expired": (lambda s: s.sign(_claims(exp=int(time.time()) - 1)), 401, "expired"),
    "not yet valid": (
        lambda s: s.sign(_claims(nbf=int(time.time()) + 600)),
        401,
        "not valid before",
    ),
    "no exp": (lambda s: s.sign(_claims(exp=None)), 401, "'exp'"),
    "hs256": (
        lambda s: jwt.encode(_claims(), "k" * 32, algorithm="HS256", headers={"kid": s.kid}),
        401,
        "algorithm",
    ),
    "alg none": (lambda s: jwt.encode(_claims(), "", algorithm="none"), 401, "algorithm"),
    "app-only": (lambda s: s.sign(_claims(scp=None, upn=None, roles=["Admin"])), 403, "app-only"),
    "other scope": (lambda s: s.sign(_claims(scp="User.Read")), 403, "user_impersonation"),
    "non-admin": (lambda s: s.sign(_claims(upn="someone@contoso.com")), 403, "administrative"),
    "no upn": (lambda s: s.sign(_claims(upn=None)), 403, "upn"),
}


@pytest.mark.parametrize("case", list(AUTH_CASES))
def test_auth_failures(
    api: Api, sim: AdminServiceSimulator, signer: TokenSigner, case: str
) -> None:
    make_token, status, fragment = AUTH_CASES[case]
    response = api.request("GET", "v1.0/$metadata", token=make_token(signer))
    assert_odata_error(response, status, fragment)
    challenge = response.headers.get("WWW-Authenticate", "")
    if case == "no header":
        assert challenge == "Bearer"
    elif status == 401:
        assert challenge.startswith('Bearer error="invalid_token", error_description="')
    elif case in ("app-only", "other scope"):
        assert 'error="insufficient_scope"' in challenge
    assert sim.calls[-1].status == status and sim.calls[-1].upn is None


def test_wrong_scheme_is_401(api: Api) -> None:
    response = api.request(
        "GET", "v1.0/$metadata", token=None, headers={"Authorization": "Basic eDp5"}
    )
    assert_odata_error(response, 401, "Bearer")


def test_valid_variants_are_accepted(
    make_sim: Callable[..., AdminServiceSimulator], http: requests.Session, signer: TokenSigner
) -> None:
    sim = make_sim(extra_audiences=[API_AUDIENCE])
    api = Api(http, sim, None)
    for claims in (
        _claims(aud=API_AUDIENCE),
        _claims(upn=ADMIN.upper()),
        _claims(scp="openid user_impersonation"),
    ):
        assert api.request("GET", "v1.0/$metadata", token=signer.sign(claims)).status_code == 200
    assert sim.calls[-1].upn == ADMIN
    assert sim.jwks_fetches == 1  # keys are cached


def test_app_only_can_be_401(
    make_sim: Callable[..., AdminServiceSimulator], http: requests.Session, signer: TokenSigner
) -> None:
    api = Api(http, make_sim(app_only_status=401), None)
    app_only = signer.sign(_claims(scp=None, upn=None, roles=["Admin"]))
    response = api.request("GET", "v1.0/$metadata", token=app_only)
    assert_odata_error(response, 401, "app-only")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_key_rotation_refetches_the_jwks(
    ca: LocalCA, signer: TokenSigner, http: requests.Session
) -> None:
    with (
        JwksServer(ca, [signer]) as keys,
        AdminServiceSimulator(ca, jwks_uri=keys.url, issuer=ISSUER, admins=[ADMIN]) as sim,
    ):
        api = Api(http, sim, None)
        assert api.request("GET", "v1.0/$metadata", token=signer.sign(_claims())).status_code == 200
        rotated = TokenSigner()
        keys.signers = [signer, rotated]
        assert (
            api.request("GET", "v1.0/$metadata", token=rotated.sign(_claims())).status_code == 200
        )
        assert keys.fetches == 2 and sim.jwks_fetches == 2


def test_refetch_cooldown_keeps_an_unknown_key_unknown(
    ca: LocalCA, signer: TokenSigner, http: requests.Session
) -> None:
    with (
        JwksServer(ca, [signer]) as keys,
        AdminServiceSimulator(
            ca, jwks_uri=keys.url, issuer=ISSUER, admins=[ADMIN], jwks_refresh_cooldown=60
        ) as sim,
    ):
        api = Api(http, sim, None)
        assert api.request("GET", "v1.0/$metadata", token=signer.sign(_claims())).status_code == 200
        rotated = TokenSigner()
        keys.signers = [signer, rotated]
        response = api.request("GET", "v1.0/$metadata", token=rotated.sign(_claims()))
        assert_odata_error(response, 401, "key was not found")
        assert sim.jwks_fetches == 1


def test_unreachable_jwks_is_401(ca: LocalCA, signer: TokenSigner, http: requests.Session) -> None:
    with pytest.raises(ValueError, match="https"):
        AdminServiceSimulator(ca, jwks_uri="http://localhost/keys", issuer=ISSUER)
    nothing = f"https://localhost:{free_port()}/keys"
    with AdminServiceSimulator(ca, jwks_uri=nothing, issuer=ISSUER, admins=[ADMIN]) as sim:
        response = Api(http, sim, None).request(
            "GET", "v1.0/$metadata", token=signer.sign(_claims())
        )
        assert_odata_error(response, 401, "could not be fetched")


def test_mfa_required_refuses_every_call(
    make_sim: Callable[..., AdminServiceSimulator], http: requests.Session, token: str
) -> None:
    api = Api(http, make_sim(mfa_required=True), token)
    assert_odata_error(api.request("GET", "v1.0/$metadata"), 403, "multi-factor")
    assert_odata_error(api.action("PS100123", "AddMembershipRule", rule_body(16777219)), 403)


def test_token_expiring_mid_batch(
    api: Api, sim: AdminServiceSimulator, signer: TokenSigner
) -> None:
    old = signer.token(issuer=ISSUER, upn=ADMIN, issued_at=time.time() - 120)
    assert api.request("GET", "v1.0/$metadata", token=old).status_code == 200
    sim.expire_tokens_issued_before(datetime.now(UTC) - timedelta(seconds=60))
    assert_odata_error(api.request("GET", "v1.0/$metadata", token=old), 401, "expired")
    fresh = signer.token(issuer=ISSUER, upn=ADMIN)
    assert api.request("GET", "v1.0/$metadata", token=fresh).status_code == 200


# -- faults ------------------------------------------------------------------------------------


def test_429_with_retry_after(api: Api, sim: AdminServiceSimulator) -> None:
    sim.fail_next(1, status=429, retry_after=7)
    response = api.request("GET", "v1.0/$metadata")
    assert_odata_error(response, 429)
    assert response.headers["Retry-After"] == "7"
    assert api.request("GET", "v1.0/$metadata").status_code == 200


def test_503_storm_then_success(api: Api, sim: AdminServiceSimulator) -> None:
    sim.storm(503, 3, retry_after=1)
    statuses = [api.request("GET", "v1.0/$metadata", token=None).status_code for _ in range(3)]
    assert statuses == [503, 503, 503]  # in front of authentication, like the gateway
    assert api.request("GET", "v1.0/$metadata").status_code == 200


def test_fault_for_one_route(api: Api, sim: AdminServiceSimulator) -> None:
    sim.fail_next(1, status=500, route="AddMembershipRule")
    assert api.request("GET", "v1.0/$metadata").status_code == 200
    assert api.action("PS100123", "AddMembershipRule", rule_body(16777219)).status_code == 500
    assert sim.direct_members("PS100123") == set()
    assert api.action("PS100123", "AddMembershipRule", rule_body(16777219)).status_code == 201


def test_reset_connection(api: Api, sim: AdminServiceSimulator) -> None:
    assert api.request("GET", "v1.0/$metadata").status_code == 200  # a kept-alive connection
    sim.reset_connections_next(1)
    with pytest.raises(requests.ConnectionError):
        api.request("GET", "v1.0/$metadata")
    assert api.request("GET", "v1.0/$metadata").status_code == 200
    assert [call.status for call in sim.calls] == [200, 0, 200]


def test_untrusted_certificate(api: Api, sim: AdminServiceSimulator) -> None:
    port = sim.port
    assert api.request("GET", "v1.0/$metadata").status_code == 200
    sim.set_untrusted_certificate(True)
    with pytest.raises(requests.exceptions.SSLError):
        api.request("GET", "v1.0/$metadata")
    sim.set_untrusted_certificate(False)
    assert sim.port == port
    assert api.request("GET", "v1.0/$metadata").status_code == 200


def test_down_and_up_again(api: Api, sim: AdminServiceSimulator) -> None:
    assert api.request("GET", "v1.0/$metadata").status_code == 200
    sim.set_down(True)
    with pytest.raises(requests.ConnectionError):
        api.request("GET", "v1.0/$metadata")
    sim.set_down(False)
    assert api.request("GET", "v1.0/$metadata").status_code == 200


def test_latency(api: Api, sim: AdminServiceSimulator) -> None:
    sim.set_latency(0.3, route="AddMembershipRule")
    started = time.monotonic()
    assert api.action("PS100123", "AddMembershipRule", rule_body(16777219)).status_code == 201
    assert time.monotonic() - started >= 0.3
    sim.latency_seconds = 0.2
    started = time.monotonic()
    assert api.request("GET", "v1.0/$metadata").status_code == 200
    assert time.monotonic() - started >= 0.2
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.request("GET", "v1.0/$metadata", timeout=0.05)


def test_slow_next_lands_after_the_client_gave_up(api: Api, sim: AdminServiceSimulator) -> None:
    sim.slow_next(1, 0.5, route="AddMembershipRule")
    assert api.request("GET", "v1.0/$metadata", timeout=0.3).status_code == 200  # other route
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.action("PS100123", "AddMembershipRule", rule_body(16777219), timeout=0.1)
    assert sim.wait_idle(timeout=5)
    assert sim.in_flight == 0
    # The add was carried out although nobody read the answer.
    assert sim.direct_members("PS100123") == {16777219}
    assert sim.successful_adds() == {("PS100123", 16777219): 1}
    # Only the next one was slow; the duplicate is refused and counts as no add.
    again = api.action("PS100123", "AddMembershipRule", rule_body(16777219), timeout=0.3)
    assert_odata_error(again, 500, "already exists")
    assert sim.successful_adds() == {("PS100123", 16777219): 1}


# -- robustness -----------------------------------------------------------------------------


def test_garbage_never_breaks_the_server(api: Api, sim: AdminServiceSimulator, ca: LocalCA) -> None:
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP on the TLS port
        with contextlib.suppress(ConnectionResetError):
            assert not plain.recv(100).startswith(b"HTTP/")
    context = ssl.create_default_context(cafile=str(ca.bundle_path))
    for garbage in (
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET /AdminService/%ZZ HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    ):
        with (
            socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(garbage)
            answer = tls.recv(4096)
            assert answer == b"" or answer.startswith(b"HTTP/1.")
    too_big = api.request(
        "POST",
        "wmi/SMS_Collection('PS100123')/AdminService.RequestRefresh",
        headers={"Content-Length": str(10**9), "Content-Type": "application/json"},
        data=b"",
    )
    assert too_big.status_code in (400, 413)
    assert api.request("GET", "v1.0/$metadata").status_code == 200


def test_concurrent_adds(
    make_sim: Callable[..., AdminServiceSimulator], ca: LocalCA, token: str
) -> None:
    devices = [_device(20000000 + i, f"WS-{i:03d}") for i in range(40)]
    sim = make_sim(devices=devices)

    def add(device: GeneratedDevice) -> int:
        with requests.Session() as session:
            session.trust_env = False
            session.verify = str(ca.bundle_path)
            body = rule_body(device.resource_id, device.name)
            return (
                Api(session, sim, token).action("PS100123", "AddMembershipRule", body).status_code
            )

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(add, devices))
    assert statuses == [201] * len(devices)
    assert sim.direct_members("PS100123") == {d.resource_id for d in devices}
    assert sim.count_calls("AddMembershipRule", status=201) == len(devices)


def test_stop_is_prompt_with_open_connections(
    make_sim: Callable[..., AdminServiceSimulator], http: requests.Session, token: str
) -> None:
    sim = make_sim()
    api = Api(http, sim, token)
    assert api.request("GET", "v1.0/$metadata").status_code == 200
    sim.latency_seconds = 30
    started = time.monotonic()
    sim.stop()
    sim.stop()
    assert time.monotonic() - started < 3


def test_call_log(api: Api, sim: AdminServiceSimulator) -> None:
    api.action("PS100123", "AddMembershipRule", rule_body(16777219))
    (call,) = sim.calls
    assert call.method == "POST" and call.status == 201 and call.upn == ADMIN
    assert call.route == "AddMembershipRule" and call.collection_id == "PS100123"
    assert call.resource_id == 16777219
    assert call.path.endswith("/SMS_Collection('PS100123')/AdminService.AddMembershipRule")
    sim.reset_calls()
    assert sim.calls == []
