"""The Azure Relay double through plain WebSocket clients: SAS and Entra ID tokens, the
held connect and the rendezvous, the joined sockets, renewToken and the faults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from devstack.entra import EntraSimulator
from devstack.relay import (
    DEFAULT_NAMESPACE,
    LISTENER_ROLE,
    SENDER_ROLE,
    AuthorizationRule,
    EntraTrust,
    HybridConnection,
    RelayDouble,
    make_sas_token,
    parse_sas,
    relay_audience,
)
from devstack.relay.tokens import SasError, encode_component
from devstack.tls import LocalCA
from tests.helpers import wait_until

HC = "site-sql"
OPEN_HC = "open-hc"
RELAY_API = "https://relay.azure.net"
SENDER_APP = "5f7c4c62-6c0e-4f44-9b8a-2d1f1c9e0a01"
LISTENER_APP = "5f7c4c62-6c0e-4f44-9b8a-2d1f1c9e0a02"
NOBODY_APP = "5f7c4c62-6c0e-4f44-9b8a-2d1f1c9e0a03"
APP_SECRET = "app-secret-value"


def _object_id(client_id: str) -> str:
    # The Entra simulator's service principal id of a client (devstack.entra.directory).
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{client_id}"))


@pytest.fixture(scope="module")
def entra(local_ca: LocalCA) -> Iterator[EntraSimulator]:
    # No user realm: client credentials never ask port 443.
    with EntraSimulator(local_ca, user_realm=False) as simulator:
        simulator.add_api(RELAY_API, scopes=("user_impersonation",))
        simulator.add_api("https://ConfigMgrService", scopes=("user_impersonation",))
        for app in (SENDER_APP, LISTENER_APP, NOBODY_APP):
            simulator.add_client(app, secret=APP_SECRET)
        yield simulator


def entra_token(entra: EntraSimulator, local_ca: LocalCA, client_id: str, resource: str) -> str:
    """An app-only access token from the Entra simulator (client credentials)."""
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": APP_SECRET,
            "scope": f"{resource}/.default",
        }
    ).encode()
    request = urllib.request.Request(entra.token_endpoint, data=form)  # noqa: S310 (https)
    context = ssl.create_default_context(cafile=str(local_ca.bundle_path))
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310
        return str(json.load(answer)["access_token"])


RULES = {
    "listen": AuthorizationRule.create("listen", "Listen"),
    "send": AuthorizationRule.create("send", "Send"),
    "manage": AuthorizationRule.create("manage", "Manage"),
}
ROOT = AuthorizationRule.create("RootManageSharedAccessKey", "Manage")


@pytest.fixture
def relay(local_ca: LocalCA, entra: EntraSimulator) -> Iterator[RelayDouble]:
    hcs = [
        HybridConnection(
            HC,
            rules=tuple(RULES.values()),
            role_assignments={_object_id(SENDER_APP): [SENDER_ROLE]},
        ),
        HybridConnection(OPEN_HC, requires_client_authorization=False, rules=(RULES["listen"],)),
    ]
    with RelayDouble(
        local_ca,
        hybrid_connections=hcs,
        rules=[ROOT],
        role_assignments={_object_id(LISTENER_APP): [LISTENER_ROLE]},
        entra=EntraTrust(entra.jwks_uri, issuers=(entra.issuer_v1, entra.issuer)),
        rendezvous_timeout=5,
    ) as double:
        yield double


class Clients:
    """WebSocket clients of one test, all closed at its end."""

    def __init__(self, relay: RelayDouble, ca: LocalCA) -> None:
        self.relay = relay
        self.context = ssl.create_default_context(cafile=str(ca.bundle_path))
        self.open: list[ClientConnection] = []
        self.pool = ThreadPoolExecutor(max_workers=8)

    def dial(
        self, url: str, token: str | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> ClientConnection:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["ServiceBusAuthorization"] = token
        options: dict[str, Any] = {"compression": None, **kw}
        ws = connect(
            url,
            ssl=self.context,
            additional_headers=all_headers,
            proxy=None,
            open_timeout=15,
            legacy=True,
            **options,
        )
        self.open.append(ws)
        return ws

    def url(self, action: str, path: str = HC, id_: str | None = None, extra: str = "") -> str:
        return f"{self.relay.endpoint(path)}?{extra}sb-hc-action={action}&sb-hc-id={id_ or uuid.uuid4()}"

    def listen(self, token: str | None = None, path: str = HC) -> ClientConnection:
        return self.dial(self.url("listen", path), token or self.relay.sas_token(path, "listen"))

    def connect_later(
        self, token: str | None = None, path: str = HC, **kw: Any
    ) -> Future[ClientConnection]:
        token = token if token is not None else self.relay.sas_token(path, "send")
        return self.pool.submit(self.dial, self.url("connect", path, **kw), token)

    def refused(self, url: str, token: str | None = None) -> InvalidStatus:
        with pytest.raises(InvalidStatus) as caught:
            self.dial(url, token)
        return caught.value

    def joined(self, listener: ClientConnection) -> tuple[ClientConnection, ClientConnection]:
        """A sender and the listener's side of its rendezvous."""
        future = self.connect_later()
        accept = json.loads(listener.recv(timeout=10))["accept"]
        accepted = self.dial(accept["address"])
        return future.result(timeout=10), accepted

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)  # dials still under way first
        for ws in self.open:
            ws.close()


@pytest.fixture
def clients(relay: RelayDouble, local_ca: LocalCA) -> Iterator[Clients]:
    harness = Clients(relay, local_ca)
    yield harness
    harness.close()


def closed_by(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason the other side sent (waits for it)."""
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            ws.recv(timeout=10)
    frame = caught.value.rcvd
    assert frame is not None, "closed without a close frame"
    return int(frame.code), frame.reason


# -- SAS tokens --------------------------------------------------------------------------


def test_a_sas_token_has_the_documented_form_and_signature():
    key = "wOPkkqpK+eZAbxPxmOmjN0Bm2TkW6Vl2zuWcVG5yPLo="
    token = make_sas_token(
        "http://contoso.servicebus.windows.net/hyco/", "SasKeyName", key, 1471633754
    )
    sr = "http%3A%2F%2Fcontoso.servicebus.windows.net%2Fhyco%2F"
    expected = base64.b64encode(
        hmac.new(key.encode("utf-8"), f"{sr}\n1471633754".encode(), hashlib.sha256).digest()
    ).decode()
    assert token == (
        f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(expected, safe='')}"
        "&se=1471633754&skn=SasKeyName"
    )
    parsed = parse_sas(token)
    assert (parsed.resource, parsed.signature, parsed.expiry, parsed.key_name) == (
        "http://contoso.servicebus.windows.net/hyco/",
        expected,
        1471633754,
        "SasKeyName",
    )
    assert parsed.signed_with(key)
    assert not parsed.signed_with(base64.b64encode(base64.b64decode(key)[::-1]).decode())


def test_url_encoding_is_javascripts_encode_uri_component():
    assert encode_component("a b/!*'()~-_.+=&") == "a%20b%2F!*'()~-_.%2B%3D%26"


def test_the_audience_has_no_port_no_hc_and_a_trailing_slash():
    assert relay_audience("NS.servicebus.windows.net", "site-sql") == (
        "http://ns.servicebus.windows.net/site-sql/"
    )
    assert relay_audience("ns.servicebus.windows.net") == "http://ns.servicebus.windows.net/"


@pytest.mark.parametrize(
    "token",
    [
        "SharedAccessSignature sr=a&sig=b&se=1",
        "SharedAccessSignature sr=a&sig=b&se=1&skn=k&skn=k",
        "SharedAccessSignature sr=a&sig=b&se=1&skn=k&extra=1",
        "SharedAccessSignature sr=a&sig=b&se=soon&skn=k",
        "Bearer sr=a&sig=b&se=1&skn=k",
    ],
)
def test_malformed_sas_tokens_are_refused_when_parsed(token):
    with pytest.raises(SasError):
        parse_sas(token)


def _tampered(token: str) -> str:
    sig = urllib.parse.unquote(token.split("sig=")[1].split("&")[0])
    raw = bytearray(base64.b64decode(sig))
    raw[0] ^= 1
    return token.replace(
        encode_component(sig), encode_component(base64.b64encode(bytes(raw)).decode())
    )


def _bad_tokens(relay: RelayDouble) -> dict[str, str | None]:
    now = int(time.time())
    send = RULES["send"]
    return {
        "missing": None,
        "garbage": "not a token",
        "tampered": _tampered(relay.sas_token(HC, "send")),
        "expired": make_sas_token(
            relay_audience(DEFAULT_NAMESPACE, HC), "send", send.primary_key, now - 1
        ),
        "unknown rule": make_sas_token(
            relay_audience(DEFAULT_NAMESPACE, HC), "nobody", send.primary_key, now + 600
        ),
        "wrong key": make_sas_token(
            relay_audience(DEFAULT_NAMESPACE, HC), "send", RULES["manage"].primary_key, now + 600
        ),
        "other entity": relay.sas_token(OPEN_HC, "RootManageSharedAccessKey"),
        "other namespace": make_sas_token(
            "http://other.servicebus.windows.net/site-sql/", "send", send.primary_key, now + 600
        ),
        "audience with $hc": make_sas_token(
            f"http://{DEFAULT_NAMESPACE}/$hc/{HC}/", "send", send.primary_key, now + 600
        ),
        "audience with port": make_sas_token(
            f"http://{DEFAULT_NAMESPACE}:443/{HC}/", "send", send.primary_key, now + 600
        ),
        # An entity's rule cannot sign for the whole namespace.
        "entity rule, namespace audience": make_sas_token(
            relay_audience(DEFAULT_NAMESPACE), "send", send.primary_key, now + 600
        ),
    }


BAD_TOKENS = (
    "missing",
    "garbage",
    "tampered",
    "expired",
    "unknown rule",
    "wrong key",
    "other entity",
    "other namespace",
    "audience with $hc",
    "audience with port",
    "entity rule, namespace audience",
)


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_a_bad_token_is_401(relay, clients, case):
    clients.listen()  # a listener is there: a pass would not be a 404
    token = _bad_tokens(relay)[case]
    refused = clients.refused(clients.url("connect"), token)
    assert refused.response.status_code == 401
    assert relay.calls[-1].status == 401
    assert refused.response.reason_phrase.startswith(relay.calls[-1].reason)
    assert b"TrackingId:" in refused.response.body


def test_the_token_may_come_in_the_query_string(relay, clients):
    token = urllib.parse.quote(relay.sas_token(HC, "listen"), safe="")
    clients.dial(f"{relay.endpoint(HC)}?sb-hc-action=listen&sb-hc-token={token}")
    assert relay.wait_for_listeners(HC, 1)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(
            lambda s: urllib.parse.quote(s, safe="").lower(), id="dotnet lower-case escapes"
        ),
        pytest.param(
            lambda s: urllib.parse.quote(s.rstrip("/"), safe=""), id="node, no trailing slash"
        ),
    ],
)
def test_other_sdks_token_encodings_verify(relay, clients, encode):
    """The signature is checked over ``sr`` as the signer encoded it."""
    key = RULES["listen"].primary_key
    expiry = int(time.time()) + 600
    sr = encode(relay_audience(DEFAULT_NAMESPACE, HC))
    sig = base64.b64encode(
        hmac.new(key.encode(), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    ).decode()
    token = f"SharedAccessSignature sr={sr}&sig={encode_component(sig)}&se={expiry}&skn=listen"
    clients.listen(token)
    assert relay.listener_count(HC) == 1


def test_the_secondary_key_and_a_namespace_token_are_valid(relay, clients):
    clients.listen(relay.sas_token(HC, "listen", secondary=True))
    clients.listen(relay.sas_token(None, "RootManageSharedAccessKey"))
    assert relay.wait_for_listeners(HC, 2)


def test_a_token_without_the_right_is_403(relay, clients):
    refused = clients.refused(clients.url("connect"), relay.sas_token(HC, "listen"))
    assert refused.response.status_code == 403
    assert "'Send' claim(s) are required" in refused.response.reason_phrase
    refused = clients.refused(clients.url("listen"), relay.sas_token(HC, "send"))
    assert refused.response.status_code == 403
    assert "'Listen' claim(s) are required" in refused.response.reason_phrase
    assert relay.listener_count(HC) == 0


def test_manage_both_listens_and_sends(relay, clients):
    manage = relay.sas_token(HC, "manage")
    listener = clients.listen(manage)
    future = clients.connect_later(manage)
    clients.dial(json.loads(listener.recv(timeout=10))["accept"]["address"])
    assert future.result(timeout=10).protocol.state.name == "OPEN"


def test_a_connection_without_client_authorization_admits_anonymous_senders(relay, clients):
    listener = clients.listen(path=OPEN_HC)
    future = clients.connect_later("", path=OPEN_HC)
    clients.dial(json.loads(listener.recv(timeout=10))["accept"]["address"])
    future.result(timeout=10).send(b"x")
    # A token that is sent is still checked.
    refused = clients.refused(
        clients.url("connect", OPEN_HC), "SharedAccessSignature sr=x&sig=y&se=1&skn=z"
    )
    assert refused.response.status_code == 401


# -- the connect ----------------------------------------------------------------------------


def test_connect_without_a_listener_is_404(relay, clients):
    refused = clients.refused(clients.url("connect"), relay.sas_token(HC, "send"))
    assert refused.response.status_code == 404
    assert "no listeners connected" in refused.response.reason_phrase
    assert refused.response.body.startswith(b"EndpointNotFound: There are no listeners")


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/$hc/no-such-hc?sb-hc-action=connect", 404),
        (f"/{HC}?sb-hc-action=connect", 404),
        (f"/$hc/{HC}?sb-hc-action=request", 400),
        (f"/$hc/{HC}?sb-hc-action=dance", 400),
        (f"/$hc/{HC}", 400),
        (f"/$hc/{HC}?sb-hc-action=connect&sb-hc-id=two%20words", 400),
        (f"/$hc/{HC}?sb-hc-action=connect&sb-hc-id={'x' * 129}", 400),
        (f"/$hc/{HC}?sb-hc-action=connect&sb-hc-action=connect", 400),
    ],
)
def test_malformed_and_unknown_requests(relay, clients, target, status):
    url = f"wss://localhost:{relay.port}{target}"
    refused = clients.refused(url, relay.sas_token(HC, "manage"))
    assert refused.response.status_code == status


def test_connect_is_held_until_the_listener_dials_then_joined(relay, clients):
    listener = clients.listen()
    sender_id = str(uuid.uuid4())
    future = clients.pool.submit(
        clients.dial,
        clients.url("connect", id_=sender_id, extra="app=cm&"),
        relay.sas_token(HC, "send"),
        {"X-Site": "PS1"},
    )
    accept = json.loads(listener.recv(timeout=10))["accept"]
    assert not future.done()  # no 101 before the listener came
    assert accept["id"] == sender_id
    address = urllib.parse.urlsplit(accept["address"])
    query = urllib.parse.parse_qs(address.query)
    assert (address.scheme, address.path) == ("wss", f"/$hc/{HC}")
    assert query["sb-hc-action"] == ["accept"] and query["app"] == ["cm"]
    assert query["sb-hc-id"][0].startswith(sender_id) and query["sb-hc-id"][0] != sender_id
    headers = {name.lower(): value for name, value in accept["connectHeaders"].items()}
    assert headers["x-site"] == "PS1" and "sec-websocket-key" in headers
    assert "servicebusauthorization" not in headers
    assert accept["remoteEndpoint"]["address"] == "127.0.0.1"
    assert isinstance(accept["remoteEndpoint"]["port"], int)
    accepted = clients.dial(accept["address"])
    sender = future.result(timeout=10)
    sender.send(b"ping")
    assert accepted.recv(timeout=10) == b"ping"
    assert [c.action for c in relay.calls] == ["listen", "accept", "connect"]


def test_messages_cross_one_for_one_both_ways(clients):
    sender, accepted = clients.joined(clients.listen())
    for message in (b"\x00\x01", "text", b"", b"x" * 200_000, "ünïcode"):
        sender.send(message)
    assert [accepted.recv(timeout=10) for _ in range(5)] == [
        b"\x00\x01",
        "text",
        b"",
        b"x" * 200_000,
        "ünïcode",
    ]
    accepted.send("back")
    accepted.send(b"bytes back")
    assert [sender.recv(timeout=10), sender.recv(timeout=10)] == ["back", b"bytes back"]


@pytest.mark.parametrize("closer", ["sender", "listener"])
@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4001, "app says bye"), (1011, "boom")])
def test_a_close_reaches_the_other_side_with_its_code_and_reason(clients, closer, code, reason):
    sender, accepted = clients.joined(clients.listen())
    first, other = (sender, accepted) if closer == "sender" else (accepted, sender)
    first.close(code, reason)
    assert closed_by(other) == (code, reason)


def test_the_rendezvous_address_works_once(relay, clients):
    listener = clients.listen()
    future = clients.connect_later()
    address = json.loads(listener.recv(timeout=10))["accept"]["address"]
    clients.dial(address)
    future.result(timeout=10)
    again = clients.refused(address)
    assert again.response.status_code == 403
    forged = clients.refused(address.split("sb-hc-id=")[0] + f"sb-hc-id={uuid.uuid4()}")
    assert forged.response.status_code == 403


def test_a_listener_reject_reaches_the_sender(relay, clients):
    listener = clients.listen()
    future = clients.connect_later()
    address = json.loads(listener.recv(timeout=10))["accept"]["address"]
    description = urllib.parse.quote("target 10.0.0.5:1433 unreachable")
    rejected = clients.refused(
        f"{address}&sb-hc-statusCode=502&sb-hc-statusDescription={description}"
    )
    assert rejected.response.status_code == 410
    with pytest.raises(InvalidStatus) as caught:
        future.result(timeout=10)
    assert caught.value.response.status_code == 502
    assert caught.value.response.reason_phrase.startswith("target 10.0.0.5:1433 unreachable")
    assert {("reject", 410), ("connect", 502)} <= {(c.action, c.status) for c in relay.calls}


def test_no_listener_at_the_rendezvous_is_504(relay, clients):
    relay.rendezvous_timeout = 1
    listener = clients.listen()
    future = clients.connect_later()
    address = json.loads(listener.recv(timeout=10))["accept"]["address"]
    with pytest.raises(InvalidStatus) as caught:
        future.result(timeout=10)
    assert caught.value.response.status_code == 504
    assert clients.refused(address).response.status_code == 403  # too late now


def test_connections_are_spread_over_the_listeners(relay, clients):
    listeners = [clients.listen(), clients.listen()]
    relay.rendezvous_timeout = 1
    futures = [clients.connect_later() for _ in range(2)]
    received = [json.loads(listener.recv(timeout=10)) for listener in listeners]
    assert all("accept" in message for message in received)
    for future in futures:
        with pytest.raises(InvalidStatus):
            future.result(timeout=10)


def test_the_listener_quota(local_ca, clients):
    with RelayDouble(
        local_ca,
        hybrid_connections=[HybridConnection(HC, rules=(RULES["listen"],))],
        max_listeners=2,
    ) as small:
        clients.relay = small
        clients.listen()
        clients.listen()
        refused = clients.refused(clients.url("listen"), small.sas_token(HC, "listen"))
        assert refused.response.status_code == 403
        assert small.listener_count(HC) == 2


def test_compression_is_never_negotiated(relay, clients):
    ws = clients.dial(clients.url("listen"), relay.sas_token(HC, "listen"), compression="deflate")
    assert "Sec-WebSocket-Extensions" not in ws.response.headers


def test_a_path_suffix_travels_to_the_listener(relay, clients):
    listener = clients.listen()
    clients.connect_later(relay.sas_token(HC, "send"), path=f"{HC}/orders")
    address = json.loads(listener.recv(timeout=10))["accept"]["address"]
    assert urllib.parse.urlsplit(address).path == f"/$hc/{HC}/orders"
    assert clients.dial(address).protocol.state.name == "OPEN"


# -- the control channel ----------------------------------------------------------------------


def test_renew_token_keeps_the_channel_past_the_old_expiry(relay, clients):
    short = relay.sas_token(HC, "listen", expires_in=2)
    listener = clients.listen(short)
    listener.send(json.dumps({"renewToken": {"token": relay.sas_token(HC, "listen")}}))
    assert wait_until(lambda: relay.renewals == 1)
    time.sleep(max(0.0, parse_sas(short).expiry - time.time()) + 0.5)  # let the old one lapse
    future = clients.connect_later()
    clients.dial(json.loads(listener.recv(timeout=10))["accept"]["address"])
    assert future.result(timeout=10).protocol.state.name == "OPEN"


def test_an_invalid_renewal_closes_the_channel_with_1008(relay, clients):
    listener = clients.listen()
    listener.send(json.dumps({"renewToken": {"token": relay.sas_token(HC, "send")}}))
    code, reason = closed_by(listener)
    assert code == 1008 and "'Listen' claim(s)" in reason
    assert relay.renewals == 0


def test_an_unrenewed_token_closes_the_channel_with_1008_when_it_expires(relay, clients):
    listener = clients.listen(relay.sas_token(HC, "listen", expires_in=1))
    code, reason = closed_by(listener)
    assert code == 1008 and reason.startswith("ExpiredToken")
    assert relay.listener_count(HC) == 0


def test_the_relay_answers_pings(clients):
    listener = clients.listen()
    assert listener.ping(b"hello").wait(timeout=10)


def test_drop_listeners_closes_every_control_channel_with_1001(relay, clients):
    listeners = [clients.listen(), clients.listen()]
    assert relay.drop_listeners(HC) == 2
    assert [closed_by(listener)[0] for listener in listeners] == [1001, 1001]
    assert relay.listener_count(HC) == 0


def test_a_stopped_relay_refuses_connections_and_starts_on_the_same_port(relay, clients):
    listener = clients.listen()
    port = relay.port
    relay.stop()
    assert closed_by(listener)[0] == 1001
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=5),
    ):
        pass
    relay.start()
    assert relay.port == port
    clients.listen()
    assert relay.listener_count(HC) == 1


# -- Entra ID ---------------------------------------------------------------------------------


def test_an_entra_token_with_the_sender_role_connects(relay, clients, entra, local_ca):
    listener = clients.listen(entra_token(entra, local_ca, LISTENER_APP, RELAY_API))  # bare JWT
    future = clients.connect_later("Bearer " + entra_token(entra, local_ca, SENDER_APP, RELAY_API))
    clients.dial(json.loads(listener.recv(timeout=10))["accept"]["address"])
    future.result(timeout=10).send(b"over entra")


def test_an_entra_token_without_the_role_is_403(relay, clients, entra, local_ca):
    clients.listen()
    for app in (NOBODY_APP, LISTENER_APP):
        token = "Bearer " + entra_token(entra, local_ca, app, RELAY_API)
        assert clients.refused(clients.url("connect"), token).response.status_code == 403
    sender = "Bearer " + entra_token(entra, local_ca, SENDER_APP, RELAY_API)
    assert clients.refused(clients.url("listen"), sender).response.status_code == 403


def test_an_entra_token_for_another_audience_or_tampered_is_401(relay, clients, entra, local_ca):
    clients.listen()
    wrong = "Bearer " + entra_token(entra, local_ca, SENDER_APP, "https://ConfigMgrService")
    assert clients.refused(clients.url("connect"), wrong).response.status_code == 401
    good = entra_token(entra, local_ca, SENDER_APP, RELAY_API)
    head, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["oid"] = _object_id(SENDER_APP).upper()
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused = clients.refused(clients.url("connect"), f"Bearer {head}.{forged}.{signature}")
    assert refused.response.status_code == 401


def test_the_relay_keeps_serving_while_a_connect_is_held(relay, clients):
    """A held connect blocks its own upgrade only."""
    relay.rendezvous_timeout = 2
    listener = clients.listen()
    held = clients.connect_later()
    json.loads(listener.recv(timeout=10))
    clients.listen()
    assert relay.listener_count(HC) == 2
    assert not held.done()
