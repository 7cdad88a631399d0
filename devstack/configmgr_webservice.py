"""The community ConfigMgr WebService (SCConfigMgr's ASMX service), SOAP 1.1 over HTTPS.

Only ``bool AddCMComputerToCollection(string secret, string resourceName, string
collectionId)`` is served, with the weaknesses of the real one kept on purpose
(configmgr.md §5):

- ``resourceName`` goes unescaped into ``SELECT * FROM SMS_R_System WHERE Name like
  '<resourceName>'``: ``%``, ``_`` and ``[...]`` are wildcards, matching ignores case,
  and the **last** record the query returns (here: the highest ResourceID) is the one
  added. ``%`` adds whichever device comes last. A name with ``'`` breaks the WQL query
  (the real service may even be injectable); the call then returns ``false``.
- A wrong secret, no match, an unknown collection or any failure inside: ``false``,
  never a reason.
- Every successful call adds a direct rule and asks for a collection refresh (one
  evaluation per device: the load the AdminService path avoids).

Request and response are the ASMX SOAP 1.1 shapes; a malformed envelope or an unknown
``SOAPAction`` gets an HTTP 500 ``soap:Fault`` as ASP.NET words it. SOAP 1.2, the
HTTP GET/POST bindings and the WSDL are not simulated. Typical use::

    with ConfigMgrWebServiceSimulator(ca, secret="s", devices=workload.devices,
                                      collections=["PS100123"]) as ws:
        requests.post(ws.url, data=request_envelope("s", "PC01", "PS100123"),
                      headers={"Content-Type": "text/xml; charset=utf-8",
                               "SOAPAction": f'"{ADD_ACTION}"'}, verify=...)
        assert ws.members("PS100123") == {16777220}
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape

from devstack.datagen import GeneratedDevice, m365_demo_scenario
from devstack.https import HttpRequest, HttpResponse, HttpsSimulator, LocalHttpsServer
from devstack.tls import LocalCA

log = logging.getLogger(__name__)

NAMESPACE: Final = "http://www.scconfigmgr.com"
SOAP_ENVELOPE_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
PATH: Final = "/ConfigMgrWebService/ConfigMgr.asmx"
ADD_ACTION: Final = f"{NAMESPACE}/AddCMComputerToCollection"

_XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
_XSD: Final = "http://www.w3.org/2001/XMLSchema"
_ENVELOPE_OPEN: Final = (
    '<?xml version="1.0" encoding="utf-8"?>'
    f'<soap:Envelope xmlns:soap="{SOAP_ENVELOPE_NS}" xmlns:xsi="{_XSI}" xmlns:xsd="{_XSD}">'
    "<soap:Body>"
)
_ENVELOPE_CLOSE: Final = "</soap:Body></soap:Envelope>"
_XML: Final = "text/xml; charset=utf-8"
# What ASP.NET on IIS adds to every answer.
_ASPNET_HEADERS: Final = {"Cache-Control": "private", "X-AspNet-Version": "4.0.30319"}
_ROUTE_TRACE: Final = (
    "\n   at System.Web.Services.Protocols.Soap11ServerProtocolHelper.RouteRequest()"
    "\n   at System.Web.Services.Protocols.SoapServerProtocol.RouteRequest(SoapServerMessage "
    "message)\n   at System.Web.Services.Protocols.SoapServerProtocol.Initialize()"
    "\n   at System.Web.Services.Protocols.ServerProtocolFactory.Create(Type type, "
    "HttpContext context, HttpRequest request, HttpResponse response, Boolean& "
    "abortProcessing)"
)


class WqlLikeError(ValueError):
    """A LIKE pattern WQL would refuse (an unterminated or empty ``[...]``)."""


def wql_like(pattern: str) -> re.Pattern[str]:
    """WQL's ``LIKE`` as a regular expression for ``fullmatch``.

    ``%`` any run of characters, ``_`` one character, ``[abc]``, ``[a-c]`` and ``[^a]``
    one character of (or not of) a set; everything else literal; case-insensitive.
    """
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                raise WqlLikeError(f"unterminated [ in {pattern!r}")
            members = pattern[index + 1 : end]
            negate = members.startswith("^")
            members = members[1:] if negate else members
            if not members:
                raise WqlLikeError(f"empty [] in {pattern!r}")
            ranges: list[str] = []
            position = 0
            while position < len(members):
                if position + 2 < len(members) and members[position + 1] == "-":
                    low, high = members[position], members[position + 2]
                    ranges.append(f"{re.escape(low)}-{re.escape(high)}")
                    position += 3
                else:
                    ranges.append(re.escape(members[position]))
                    position += 1
            parts.append(f"[{'^' if negate else ''}{''.join(ranges)}]")
            index = end
        else:
            parts.append(re.escape(char))
        index += 1
    try:
        return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
    except re.error as error:  # a reversed range such as [z-a]
        raise WqlLikeError(f"{pattern!r}: {error}") from None


def request_envelope(secret: str, resource_name: str, collection_id: str) -> bytes:
    """A SOAP 1.1 ``AddCMComputerToCollection`` request body, as ASMX documents it."""
    return (
        f'{_ENVELOPE_OPEN}<AddCMComputerToCollection xmlns="{NAMESPACE}">'
        f"<secret>{escape(secret)}</secret>"
        f"<resourceName>{escape(resource_name)}</resourceName>"
        f"<collectionId>{escape(collection_id)}</collectionId>"
        f"</AddCMComputerToCollection>{_ENVELOPE_CLOSE}"
    ).encode()


@dataclass(frozen=True, slots=True)
class WebServiceCall:
    """One ``AddCMComputerToCollection`` call (never the secret).

    ``matched`` are the ResourceIDs the LIKE query returned, in order; ``resource_id``
    the one added (the last), when the call got that far.
    """

    resource_name: str | None
    collection_id: str | None
    result: bool
    secret_ok: bool
    matched: tuple[int, ...]
    resource_id: int | None
    at: float


class _Fault(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


def _fault_response(fault: _Fault) -> HttpResponse:
    body = (
        f"{_ENVELOPE_OPEN}<soap:Fault><faultcode>{fault.code}</faultcode>"
        f"<faultstring>{escape(fault.text)}</faultstring><detail /></soap:Fault>"
        f"{_ENVELOPE_CLOSE}"
    )
    return HttpResponse(500, body.encode("utf-8"), _XML, dict(_ASPNET_HEADERS))


def _unreadable(line: int, column: int, reason: str) -> _Fault:
    return _Fault(
        "soap:Client",
        f"Server was unable to read request. ---> There is an error in XML document "
        f"({line}, {column}). ---> {reason}",
    )


def _split(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an ElementTree tag."""
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


class ConfigMgrWebServiceSimulator(HttpsSimulator):
    """``ConfigMgr.asmx`` over HTTPS on 127.0.0.1, backed by in-memory devices.

    ``devices`` play ``SMS_R_System`` (all records, duplicates included);
    ``collections`` the collection IDs that exist (compared ignoring case, as WMI
    does). ``latency_seconds``, :meth:`set_down` and :meth:`fail_next` simulate a slow,
    dead or failing service.
    """

    def __init__(
        self,
        ca: LocalCA,
        *,
        secret: str,
        devices: Iterable[GeneratedDevice] = (),
        collections: Iterable[str] = (),
        port: int | None = None,
    ) -> None:
        self._secret = secret
        self._lock = threading.Lock()
        self._devices: list[GeneratedDevice] = []
        self._members: dict[str, set[int]] = {}
        self._calls: list[WebServiceCall] = []
        self._refresh_count = 0
        self._failures: list[int] = []
        for device in devices:
            self.add_device(device)
        for collection_id in collections:
            self.add_collection(collection_id)
        self._server = LocalHttpsServer(
            ca.server_context(), self._handle, port=port, name="configmgr webservice"
        )

    # -- lifecycle -----------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` SOAP calls with ``status``: 500 is a ``soap:Server``
        fault (the site's SMS Provider failing), anything else IIS's error page."""
        with self._lock:
            self._failures.extend([status] * count)

    @property
    def url(self) -> str:
        """``https://localhost:<port>/ConfigMgrWebService/ConfigMgr.asmx``."""
        return f"https://localhost:{self.port}{PATH}"

    # -- the site's state ----------------------------------------------------------

    def add_device(self, device: GeneratedDevice) -> None:
        """Add a discovery record (several may share a name)."""
        with self._lock:
            self._devices.append(device)
            self._devices.sort(key=lambda d: d.resource_id)  # WMI's enumeration order

    def add_collection(self, collection_id: str) -> None:
        """Make a (device) collection exist."""
        with self._lock:
            self._members.setdefault(collection_id.upper(), set())

    def members(self, collection_id: str) -> set[int]:
        """ResourceIDs with a direct rule in the collection (KeyError if it does not exist)."""
        with self._lock:
            return set(self._members[collection_id.upper()])

    @property
    def calls(self) -> list[WebServiceCall]:
        """Every ``AddCMComputerToCollection`` call, oldest first."""
        with self._lock:
            return list(self._calls)

    @property
    def refresh_count(self) -> int:
        """Collection refreshes requested (one per successful call)."""
        with self._lock:
            return self._refresh_count

    @property
    def http_log(self) -> list[tuple[str, str, int]]:
        """(method, target, status) of every HTTP request."""
        return [(e.method, e.target, e.status) for e in self._server.http_log]

    # -- the web method ------------------------------------------------------------

    def add_cm_computer_to_collection(
        self, secret: str | None, resource_name: str | None, collection_id: str | None
    ) -> bool:
        """What the web method does, without HTTP: True only if a rule was added."""
        secret_ok = secret is not None and hmac.compare_digest(
            secret.encode("utf-8"), self._secret.encode("utf-8")
        )
        matched: tuple[int, ...] = ()
        resource_id: int | None = None
        result = False
        with self._lock:
            if secret_ok:
                matched = self._query(resource_name or "")
                key = (collection_id or "").upper()
                # The service reads the ResourceID of the last row; with none, its
                # Convert.ToInt32("") throws, and an unknown collection makes
                # GetInstance throw: both end in its catch-all, which returns false.
                if matched and key in self._members:
                    resource_id = matched[-1]
                    self._members[key].add(resource_id)
                    self._refresh_count += 1  # RequestRefresh after every add
                    result = True
            self._calls.append(
                WebServiceCall(
                    resource_name=resource_name,
                    collection_id=collection_id,
                    result=result,
                    secret_ok=secret_ok,
                    matched=matched,
                    resource_id=resource_id,
                    at=time.time(),
                )
            )
        return result

    def _query(self, resource_name: str) -> tuple[int, ...]:
        """``SELECT * FROM SMS_R_System WHERE Name like '<resource_name>'`` (unescaped)."""
        if "'" in resource_name:
            return ()  # the quote ends the WQL string literal: an invalid query
        try:
            pattern = wql_like(resource_name)
        except WqlLikeError:
            return ()
        return tuple(d.resource_id for d in self._devices if pattern.fullmatch(d.name))

    # -- HTTP ----------------------------------------------------------------------

    def _handle(self, request: HttpRequest) -> HttpResponse:
        if request.path.lower() != PATH.lower():
            return HttpResponse.text(
                404,
                "<html><body><h2>404 - File or directory not found.</h2></body></html>",
                "text/html",
            )
        if request.method in ("GET", "HEAD"):
            return HttpResponse.text(
                200,
                "<html><body><p>ConfigMgr WebService</p><ul>"
                '<li><a href="ConfigMgr.asmx?op=AddCMComputerToCollection">'
                "AddCMComputerToCollection</a></li></ul></body></html>",
                "text/html; charset=utf-8",
            )
        if request.method != "POST":
            return HttpResponse.text(405, "Method Not Allowed")
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure == 500:
            return _fault_response(
                _Fault(
                    "soap:Server",
                    "Server was unable to process request. ---> Unable to connect to the "
                    "SMS Provider.",
                )
            )
        if failure is not None:
            return HttpResponse.text(
                failure,
                f"<html><body><h2>HTTP Error {failure}</h2></body></html>",
                "text/html",
            )
        media_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if media_type != "text/xml":  # SOAP 1.2 (application/soap+xml) is not simulated
            return HttpResponse.text(415, "Unsupported Media Type")
        try:
            secret, resource_name, collection_id = self._read_call(request)
        except _Fault as fault:
            return _fault_response(fault)
        result = self.add_cm_computer_to_collection(secret, resource_name, collection_id)
        body = (
            f'{_ENVELOPE_OPEN}<AddCMComputerToCollectionResponse xmlns="{NAMESPACE}">'
            f"<AddCMComputerToCollectionResult>{'true' if result else 'false'}"
            f"</AddCMComputerToCollectionResult></AddCMComputerToCollectionResponse>"
            f"{_ENVELOPE_CLOSE}"
        )
        return HttpResponse(200, body.encode("utf-8"), _XML, dict(_ASPNET_HEADERS))

    @staticmethod
    def _read_call(request: HttpRequest) -> tuple[str | None, str | None, str | None]:
        """The three parameters, or the fault ASMX would answer with."""
        action = (request.header("soapaction") or "").strip().strip('"')
        if action != ADD_ACTION:
            raise _Fault(
                "soap:Client",
                "System.Web.Services.Protocols.SoapException: Server did not recognize the "
                f"value of HTTP Header SOAPAction: {action}.{_ROUTE_TRACE}",
            )
        if b"<!doctype" in request.body.lower():
            raise _unreadable(
                1,
                1,
                "For security reasons DTD is prohibited in this XML document. To enable DTD "
                "processing set the DtdProcessing property on XmlReaderSettings to Parse and "
                "pass the settings into XmlReader.Create method.",
            )
        try:
            # No DTD (refused above), expat's entity limits, a 1 MiB body cap: safe.
            root = ET.fromstring(request.body)  # noqa: S314
        except ET.ParseError as error:
            line, column = error.position
            raise _unreadable(line, column + 1, "Data at the root level is invalid.") from None
        namespace, local = _split(root.tag)
        if local != "Envelope":
            raise _unreadable(1, 2, f"<{local} xmlns='{namespace}'> was not expected.")
        if namespace != SOAP_ENVELOPE_NS:
            raise _Fault(
                "soap:VersionMismatch",
                f"Possible SOAP version mismatch: Envelope namespace {namespace} was "
                f"unexpected. Expecting {SOAP_ENVELOPE_NS}.",
            )
        body = root.find(f"{{{SOAP_ENVELOPE_NS}}}Body")
        method = next(iter(body), None) if body is not None else None
        if method is None:
            raise _Fault("soap:Client", "Server was unable to read request. ---> Missing Body.")
        namespace, local = _split(method.tag)
        if (namespace, local) != (NAMESPACE, "AddCMComputerToCollection"):
            raise _unreadable(1, 2, f"<{local} xmlns='{namespace}'> was not expected.")

        def parameter(name: str) -> str | None:
            # XmlSerializer binds only elements in the service's namespace, by exact
            # name; a missing or xsi:nil one is a null string.
            element = method.find(f"{{{NAMESPACE}}}{name}")
            if element is None or element.get(f"{{{_XSI}}}nil") == "true":
                return None
            return element.text or ""

        return parameter("secret"), parameter("resourceName"), parameter("collectionId")


# -- running it on its own ----------------------------------------------------------------

SAMPLE_SECRET: Final = "devstack-webservice-secret"


def main() -> None:
    """Serve the demo site's devices until Ctrl-C: ``python -m devstack.configmgr_webservice``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ca = LocalCA()
    workload = m365_demo_scenario()
    collections = ("PS100123", "PS100124", "PS100125")
    with ConfigMgrWebServiceSimulator(
        ca, secret=SAMPLE_SECRET, devices=workload.devices, collections=collections
    ) as service:
        sample = workload.devices[-1].name
        print(f"url          {service.url}")
        print(f"CA bundle    {ca.bundle_path}")
        print(f"secret       {SAMPLE_SECRET}")
        print(f"devices      {len(workload.devices)} (e.g. {sample}); collections {collections}")
        print(f'SOAPAction   "{ADD_ACTION}"')
        print(
            f"try          curl --cacert {ca.bundle_path} -H 'Content-Type: text/xml; "
            f"charset=utf-8' -H 'SOAPAction: \"{ADD_ACTION}\"' --data "
            f"'{request_envelope(SAMPLE_SECRET, sample, collections[0]).decode()}' {service.url}"
        )
        print("serving until Ctrl-C")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
