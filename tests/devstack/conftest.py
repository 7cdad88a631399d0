"""Fixtures the simulator tests share: a token signer with its JWKS endpoint (what the
AdminService simulator trusts), simulators started against it and an HTTP session that
trusts the local CA, and the site database stand-in reset, with a reader login
connection. A module that needs another kind defines its own fixture of the name."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyodbc
import pytest
import requests

from devstack.adminservice import AdminServiceSimulator, JwksServer, TokenSigner
from devstack.entra import EntraSimulator
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from tests.devstack.entra_support import PASSWORD


@pytest.fixture(scope="module")
def signer() -> TokenSigner:
    return TokenSigner()


@pytest.fixture(scope="module")
def jwks(local_ca: LocalCA, signer: TokenSigner) -> Iterator[JwksServer]:
    with JwksServer(local_ca, [signer]) as server:
        yield server


@pytest.fixture
def db(site_db: SiteDatabase) -> SiteDatabase:
    site_db.reset()
    return site_db


@pytest.fixture
def reader(db: SiteDatabase) -> Iterator[pyodbc.Connection]:
    connection = db.connect_reader()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def trusting_session(local_ca: LocalCA) -> Iterator[requests.Session]:
    """An HTTP session that trusts the local CA (and only through ``verify``)."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
    session.verify = str(local_ca.bundle_path)
    yield session
    session.close()


@pytest.fixture
def start_simulator(
    local_ca: LocalCA, jwks: JwksServer
) -> Iterator[Callable[..., AdminServiceSimulator]]:
    """``start_simulator(issuer=, admins=, **options)``: an AdminService simulator that
    trusts :func:`jwks`, stopped at teardown, which fails on any internal error it had."""
    started: list[AdminServiceSimulator] = []

    def start(*, issuer: str, admins: list[str], **options: Any) -> AdminServiceSimulator:
        simulator = AdminServiceSimulator(
            local_ca, jwks_uri=jwks.url, issuer=issuer, admins=admins, **options
        ).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()
        assert simulator.internal_errors == []


# The Entra ID simulator's device-code and refresh-token tests: each module defines its
# own ``sim``.
@pytest.fixture
def client_id(sim: EntraSimulator) -> str:
    """A new public client app of ``sim``."""
    client = str(uuid.uuid4())
    sim.add_client(client, public=True)
    return client


@pytest.fixture
def admin(sim: EntraSimulator) -> str:
    """An admin whom conditional access makes use MFA (their password grant fails)."""
    upn = f"admin-{uuid.uuid4().hex[:8]}@contoso.example"
    sim.add_user(upn, PASSWORD, mfa_required=True)
    return upn
