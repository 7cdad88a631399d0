"""Fixtures the simulator tests share: a token signer with its JWKS endpoint (what the
AdminService simulator trusts), and the site database stand-in reset, with a reader
login connection. A module that needs another kind defines its own fixture of the name."""

from __future__ import annotations

from collections.abc import Iterator

import pyodbc
import pytest

from devstack.adminservice import JwksServer, TokenSigner
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA


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
