"""The ConfigMgr WebService simulator over real HTTPS: the SOAP 1.1 shapes, ASMX faults,
and the real service's weaknesses kept on purpose (unescaped LIKE, last match wins,
true/false only)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import requests

from devstack.configmgr_webservice import (
    ADD_ACTION,
    NAMESPACE,
    PATH,
    SOAP_ENVELOPE_NS,
    ConfigMgrWebServiceSimulator,
    WqlLikeError,
    request_envelope,
    wql_like,
)
from devstack.datagen import m365_demo_scenario
from devstack.tls import LocalCA
from tests.helpers import device

SECRET = "pre-shared-s3cret"
COLLECTION = "PS100123"


DEVICES = [
    device(16777220, "PC01"),
    device(16777221, "PC02"),
    device(16777222, "LAB_01"),
    device(16777223, "LABX01"),
    device(16777231, "dup01"),  # a re-imaged machine: two records, one name
    device(16777230, "DUP01"),  # given out of order: the service sorts by ResourceID
    device(16777240, "SRV01"),
]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("webservice-ca"))


@pytest.fixture
def ws(ca: LocalCA) -> Iterator[ConfigMgrWebServiceSimulator]:
    with ConfigMgrWebServiceSimulator(
        ca, secret=SECRET, devices=DEVICES, collections=[COLLECTION, "PS100124"]
    ) as service:
        yield service


@pytest.fixture(scope="module")
def session(ca: LocalCA) -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify=
    http.verify = str(ca.bundle_path)
    return http


def post(
    session: requests.Session,
    ws: ConfigMgrWebServiceSimulator,
    body: bytes,
    *,
    action: str | None = ADD_ACTION,
    content_type: str = "text/xml; charset=utf-8",
) -> requests.Response:
    headers = {"Content-Type": content_type}
    if action is not None:
        headers["SOAPAction"] = f'"{action}"'
    return session.post(ws.url, data=body, headers=headers, timeout=5)


def add(
    session: requests.Session,
    ws: ConfigMgrWebServiceSimulator,
    name: str,
    collection: str = COLLECTION,
    secret: str = SECRET,
) -> bool:
    response = post(session, ws, request_envelope(secret, name, collection))
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    root = ET.fromstring(response.content)  # noqa: S314 - the simulator's own answer
    result = root.find(
        f"{{{SOAP_ENVELOPE_NS}}}Body/{{{NAMESPACE}}}AddCMComputerToCollectionResponse"
        f"/{{{NAMESPACE}}}AddCMComputerToCollectionResult"
    )
    assert result is not None and result.text in ("true", "false")
    return result.text == "true"


def fault(response: requests.Response) -> tuple[str, str]:
    assert response.status_code == 500
    root = ET.fromstring(response.content)  # noqa: S314 - the simulator's own answer
    element = root.find(f"{{{SOAP_ENVELOPE_NS}}}Body/{{{SOAP_ENVELOPE_NS}}}Fault")
    assert element is not None
    return element.findtext("faultcode") or "", element.findtext("faultstring") or ""


# -- the happy path --------------------------------------------------------------------------


def test_add_by_exact_name(session: requests.Session, ws: ConfigMgrWebServiceSimulator) -> None:
    assert ws.url == f"https://localhost:{ws.port}{PATH}"
    assert add(session, ws, "PC01")
    assert ws.members(COLLECTION) == {16777220}
    assert ws.refresh_count == 1
    call = ws.calls[-1]
    assert (call.resource_name, call.collection_id, call.result) == ("PC01", COLLECTION, True)
    assert call.matched == (16777220,) and call.resource_id == 16777220
    # Adding again keeps one rule and refreshes the collection again.
    assert add(session, ws, "PC01")
    assert ws.members(COLLECTION) == {16777220}
    assert ws.refresh_count == 2


def test_response_is_the_asmx_envelope(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    response = post(session, ws, request_envelope(SECRET, "PC02", COLLECTION))
    text = response.text
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?><soap:Envelope ')
    assert (
        '<soap:Body><AddCMComputerToCollectionResponse xmlns="http://www.scconfigmgr.com">'
        "<AddCMComputerToCollectionResult>true</AddCMComputerToCollectionResult>"
        "</AddCMComputerToCollectionResponse></soap:Body></soap:Envelope>"
    ) in text


def test_names_and_collection_ids_ignore_case(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    assert add(session, ws, "pc02", collection="ps100124")
    assert ws.members("PS100124") == {16777221}


# -- the real service's weaknesses -----------------------------------------------------------


def test_percent_is_a_wildcard_and_the_last_match_wins(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    # The real service puts resourceName unescaped into WQL LIKE: "PC0%" is a pattern,
    # and of the rows it returns, the last one is added. A caller cannot tell.
    assert add(session, ws, "PC0%")
    assert ws.calls[-1].matched == (16777220, 16777221)
    assert ws.members(COLLECTION) == {16777221}
    # "%" alone adds whichever device comes last: here the site server.
    assert add(session, ws, "%")
    assert ws.members(COLLECTION) == {16777221, 16777240}


def test_underscore_is_a_wildcard(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    # "LAB_01" is a real machine name, and also matches LABX01, which comes later.
    assert add(session, ws, "LAB_01")
    assert ws.calls[-1].matched == (16777222, 16777223)
    assert ws.members(COLLECTION) == {16777223}


def test_duplicate_records_last_resource_id_wins(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    assert add(session, ws, "DUP01")
    assert ws.calls[-1].matched == (16777230, 16777231)
    assert ws.members(COLLECTION) == {16777231}


@pytest.mark.parametrize(
    ("name", "collection", "why"),
    [
        ("NOPE01", COLLECTION, "no such device"),
        ("PC01", "PS1FFFFF", "no such collection"),
        ("O'Brien", COLLECTION, "a quote breaks the WQL query"),
        ("PC[01", COLLECTION, "WQL refuses the pattern"),
        ("", COLLECTION, "empty name"),
    ],
)
def test_failures_are_just_false(
    session: requests.Session,
    ws: ConfigMgrWebServiceSimulator,
    name: str,
    collection: str,
    why: str,
) -> None:
    assert not add(session, ws, name, collection=collection), why
    assert ws.members(COLLECTION) == set()
    assert ws.refresh_count == 0


def test_wrong_secret_is_false_and_never_logged(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    assert not add(session, ws, "PC01", secret="guess")
    assert ws.members(COLLECTION) == set()
    assert ws.calls[-1].secret_ok is False and ws.calls[-1].matched == ()
    assert SECRET not in repr(ws.calls) and "guess" not in repr(ws.calls)


def test_missing_or_unqualified_parameters_are_null(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    envelope = (
        f'<soap:Envelope xmlns:soap="{SOAP_ENVELOPE_NS}"><soap:Body>'
        f'<AddCMComputerToCollection xmlns="{NAMESPACE}"><secret>{SECRET}</secret>'
        '<resourceName xmlns="">PC01</resourceName>'  # not in the service's namespace
        f"<collectionId>{COLLECTION}</collectionId></AddCMComputerToCollection>"
        "</soap:Body></soap:Envelope>"
    )
    response = post(session, ws, envelope.encode())
    assert response.status_code == 200 and ">false<" in response.text
    assert ws.calls[-1].resource_name is None


def test_generated_workload_duplicates(ca: LocalCA, session: requests.Session) -> None:
    workload = m365_demo_scenario()
    names: dict[str, list[int]] = {}
    for record in workload.devices:
        names.setdefault(record.name.upper(), []).append(record.resource_id)
    name, ids = next((n, i) for n, i in names.items() if len(i) > 1)
    with ConfigMgrWebServiceSimulator(
        ca, secret=SECRET, devices=workload.devices, collections=[COLLECTION]
    ) as service:
        assert add(session, service, name.lower())
        assert service.members(COLLECTION) == {max(ids)}


# -- SOAP faults and HTTP --------------------------------------------------------------------


def test_garbage_is_a_soap_fault(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    code, text = fault(post(session, ws, b"this is not XML"))
    assert code == "soap:Client"
    assert text.startswith("Server was unable to read request. ---> There is an error in XML")


def test_unknown_or_missing_soap_action(
    session: requests.Session, ws: ConfigMgrWebServiceSimulator
) -> None:
    body = request_envelope(SECRET, "PC01", COLLECTION)
    code, text = fault(post(session, ws, body, action=f"{NAMESPACE}/GetCMComputer"))
    assert code == "soap:Client"
    assert f"HTTP Header SOAPAction: {NAMESPACE}/GetCMComputer." in text
    code, text = fault(post(session, ws, body, action=None))
    assert "HTTP Header SOAPAction: ." in text
    assert ws.members(COLLECTION) == set()


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>',
            "soap:VersionMismatch",
            "Possible SOAP version mismatch",
        ),
        (
            f'<soap:Envelope xmlns:soap="{SOAP_ENVELOPE_NS}"><soap:Body>'
            f'<AddCMComputerToCollection xmlns="http://wrong.example"/></soap:Body>'
            "</soap:Envelope>".encode(),
            "soap:Client",
            "was not expected",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><lolz>&lol;</lolz>',
            "soap:Client",
            "DTD is prohibited",
        ),
        (b"<Envelope/>", "soap:VersionMismatch", "Envelope namespace  was unexpected"),
        (b"<Other/>", "soap:Client", "<Other xmlns=''> was not expected"),
    ],
)
def test_malformed_envelopes_are_faults(
    session: requests.Session,
    ws: ConfigMgrWebServiceSimulator,
    body: bytes,
    code: str,
    words: str,
) -> None:
    got_code, text = fault(post(session, ws, body))
    assert got_code == code and words in text


def test_http_edges(session: requests.Session, ws: ConfigMgrWebServiceSimulator) -> None:
    assert session.get(ws.url, timeout=5).status_code == 200  # the ASMX help page
    assert session.get(ws.url.replace("ConfigMgr.asmx", "Other.asmx"), timeout=5).status_code == 404
    soap12 = post(
        session,
        ws,
        request_envelope(SECRET, "PC01", COLLECTION),
        content_type="application/soap+xml; charset=utf-8",
    )
    assert soap12.status_code == 415


def test_faults_and_outages(session: requests.Session, ws: ConfigMgrWebServiceSimulator) -> None:
    body = request_envelope(SECRET, "PC01", COLLECTION)
    ws.fail_next(1, 500)
    assert fault(post(session, ws, body))[0] == "soap:Server"
    ws.fail_next(1, 503)
    assert post(session, ws, body).status_code == 503
    port = ws.port
    ws.set_down(True)
    with pytest.raises(requests.ConnectionError):
        post(session, ws, body)
    ws.set_down(False)
    assert ws.port == port
    assert add(session, ws, "PC01")
    assert ws.members(COLLECTION) == {16777220}


def test_untrusted_ca_is_a_tls_error(ws: ConfigMgrWebServiceSimulator) -> None:
    stranger = requests.Session()
    stranger.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        stranger.post(ws.url, data=b"", timeout=5)


# -- the LIKE translation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("PC01", "pc01", True),
        ("PC01", "PC011", False),
        ("PC%", "PC", True),
        ("%01", "LAB_01", True),
        ("PC_1", "PCX1", True),
        ("PC_1", "PC1", False),
        ("PC[0-3]1", "PC21", True),
        ("PC[0-3]1", "PC41", False),
        ("PC[^0]1", "PC01", False),
        ("PC[^0]1", "PC11", True),
        ("a.b", "aXb", False),  # regex characters are literal
        ("100%", "100% done", True),
    ],
)
def test_wql_like(pattern: str, name: str, matches: bool) -> None:
    assert bool(wql_like(pattern).fullmatch(name)) is matches


@pytest.mark.parametrize("pattern", ["PC[01", "PC[]", "PC[z-a]"])
def test_wql_like_refuses_bad_patterns(pattern: str) -> None:
    with pytest.raises(WqlLikeError):
        wql_like(pattern)
