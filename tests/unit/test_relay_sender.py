"""The sender side of the site database's hybrid connection, piece by piece: its
tokens (against Microsoft's own hyco-ws), the preamble Azure Relay Bridge
reads, and the connection string that points ODBC at the tunnel."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from shared.errors import ConfigurationError
from shared.platform.connection_strings import check_site_db_tls, parse_odbc, through_tunnel
from shared.platform.relay.tokens import SasTokens, relay_audience, sas_token
from shared.platform.relay.tunnel import RelayRoute
from shared.platform.settings import load_settings

DEVSTACK = Path(__file__).resolve().parents[2] / "devstack"
NAMESPACE = "contoso-relay.servicebus.windows.net"
KEY = "bXlTZWNyZXRLZXlGb3JUaGVSZWxheU5vdFJlYWxseUJhc2U2NA=="


def test_the_audience_is_the_hybrid_connection_over_http_without_port():
    assert relay_audience(NAMESPACE, "site-db") == f"http://{NAMESPACE}/site-db/"
    assert relay_audience("LOCALHOST:8443", "/site-db/") == "http://localhost/site-db/"


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on PATH")
def test_a_token_is_the_one_microsofts_hyco_ws_signs():
    # hyco-ws signs for the URL it is given, made http:// and without $hc/ (here no port
    # and no trailing slash), with its own clock: sign the same audience and expiry here
    # and compare the strings.
    script = (
        "const ws = require('hyco-ws');"
        f"process.stdout.write(ws.createRelayToken('wss://{NAMESPACE}/$hc/site-db',"
        f" 'cmremediate-send', '{KEY}', 3600));"
    )
    theirs = subprocess.run(
        ["node", "-e", script], cwd=DEVSTACK, capture_output=True, text=True, check=True
    ).stdout
    fields = parse_qs(theirs.removeprefix("SharedAccessSignature "))
    audience, expiry = fields["sr"][0], int(fields["se"][0])
    assert audience == f"http://{NAMESPACE}/site-db"
    assert sas_token(audience, "cmremediate-send", KEY, expiry) == theirs


def test_sas_tokens_are_renewed_before_they_expire():
    now = [1_800_000_000.0]
    tokens = SasTokens(
        NAMESPACE, "site-db", "send", KEY, lifetime_seconds=3600, clock=lambda: now[0]
    )
    first = tokens.token()
    assert "se=1800003600" in first and tokens.expires_at() == 1_800_003_600
    now[0] += 3000  # ten minutes left: still good
    assert tokens.token() == first
    now[0] += 400  # less than five: a new one
    assert tokens.token() != first and tokens.expires_at() == 1_800_007_000


def test_the_bridge_preamble_names_the_port_and_hcm_sends_none():
    route = RelayRoute("wss://x/$hc/site-db", "site-db", "bridge", "sql")
    assert route.preamble() == b"\x01\x00\x00\x03sql"
    named = RelayRoute("wss://x/$hc/site-db", "site-db", "bridge", "sqlé")
    assert named.preamble() == b"\x01\x00\x00\x05sql\xc3\xa9"
    assert RelayRoute("wss://x/$hc/site-db", "site-db", "hcm").preamble() == b""


def test_odbc_goes_to_the_tunnel_and_still_checks_the_sql_servers_name():
    original = (
        "Driver={ODBC Driver 18 for SQL Server};Server=tcp:sql01.contoso.local,1433;"
        "Database=CM_PS1;Uid=reader;Pwd={p;w}}d};Encrypt=yes"
    )
    tunnelled = through_tunnel(original, 50123)
    values = {a.key: a.value for a in parse_odbc(tunnelled)}
    assert values["server"] == "tcp:127.0.0.1,50123"
    assert values["hostnameincertificate"] == "sql01.contoso.local"
    assert values["pwd"] == "p;w}d" and values["encrypt"] == "yes"
    check_site_db_tls(tunnelled)  # still encrypted and verified
    with pytest.raises(ValueError, match="static port"):
        through_tunnel(original.replace("tcp:sql01.contoso.local,1433", "sql01\\CM"), 1)


REQUIRED = {
    "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Server=sql01,1433;Uid=u;Pwd=p",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


def test_relay_settings_come_in_pairs_and_name_what_is_wrong():
    settings = load_settings(
        {**REQUIRED, "SITE_DB_RELAY_NAMESPACE": NAMESPACE.upper(), "SITE_DB_RELAY_PATH": "site-db"}
    )
    assert settings.relay_configured and settings.site_db_relay_namespace == NAMESPACE
    assert settings.site_db_relay_listener == "bridge" and settings.site_db_relay_port_name == "sql"
    assert not load_settings(REQUIRED).relay_configured
    relay = {"SITE_DB_RELAY_NAMESPACE": NAMESPACE, "SITE_DB_RELAY_PATH": "site-db"}
    for broken, named in (
        ({"SITE_DB_RELAY_NAMESPACE": NAMESPACE}, "SITE_DB_RELAY_PATH"),
        ({**relay, "SITE_DB_RELAY_KEY_NAME": "send"}, "SITE_DB_RELAY_KEY"),
        ({"SITE_DB_RELAY_NAMESPACE": "https://x/", "SITE_DB_RELAY_PATH": "a"}, "NAMESPACE"),
        ({**relay, "SITE_DB_RELAY_LISTENER": "vpn"}, "SITE_DB_RELAY_LISTENER"),
        ({**relay, "SITE_DB_RELAY_PORT_NAME": "x" * 256}, "SITE_DB_RELAY_PORT_NAME"),
    ):
        with pytest.raises(ConfigurationError, match=named):
            load_settings({**REQUIRED, **broken})
