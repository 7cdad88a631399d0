"""The site database connection is verified TLS: the stand-in serves TLS only, the
reader's connection string checks the chain and the host name, and a certificate the
client cannot verify is refused with the TLS hint, not retried as a network fault."""

from __future__ import annotations

import pyodbc
import pytest

from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from shared.errors import ConfigurationError, SiteDatabaseRefused
from shared.export.site_database import SiteDatabaseClient
from shared.platform.retry import RetryPolicy
from shared.platform.settings import load_settings

pytestmark = pytest.mark.stack

TLS_HINT = "the SQL Server certificate was refused"


def ssl_in_use(connection_string: str) -> tuple[bool, str]:
    with pyodbc.connect(connection_string, autocommit=True, timeout=10) as connection:
        row = connection.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    return bool(row[0]), str(row[1])


def client(connection_string: str, sleeps: list[float]) -> SiteDatabaseClient:
    return SiteDatabaseClient(
        connection_string,
        login_timeout_seconds=10,
        retry=RetryPolicy(attempts=5, initial_backoff_seconds=0.01),
        sleep=sleeps.append,
    )


def test_the_reader_connects_over_verified_tls(site_db: SiteDatabase) -> None:
    connection_string = site_db.reader_connection_string
    assert "SSLmode=verify-full;" in connection_string
    assert f"sslrootcert='{site_db.ca_bundle_path}'" in connection_string
    encrypted, version = ssl_in_use(connection_string)
    assert encrypted and version.startswith("TLSv1.")
    load_settings(
        {
            "SITE_DB_CONNECTION": connection_string,
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        }
    )


def test_the_server_refuses_clients_without_tls(site_db: SiteDatabase) -> None:
    plain = site_db.reader_connection_string.replace("SSLmode=verify-full", "SSLmode=disable")
    with pytest.raises(pyodbc.Error, match="no encryption"):
        pyodbc.connect(plain, autocommit=True, timeout=10)
    with pytest.raises(ConfigurationError, match="SITE_DB_CONNECTION: SSLmode=disable"):
        load_settings(
            {"SITE_DB_CONNECTION": plain, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
        )


def test_an_untrusted_certificate_is_refused_with_the_tls_hint(
    site_db: SiteDatabase, tmp_path
) -> None:
    attacker = LocalCA(tmp_path)
    untrusting = site_db.reader_connection_string.replace(
        str(site_db.ca_bundle_path), str(attacker.bundle_path)
    )
    sleeps: list[float] = []
    with client(untrusting, sleeps) as reader, pytest.raises(SiteDatabaseRefused) as caught:
        reader.sites()
    message = str(caught.value)
    assert "certificate verify failed" in message and TLS_HINT in message
    assert "SQLSTATE TLS" in message
    assert sleeps == []  # refused at once: not a network fault worth retrying


def test_a_certificate_for_another_host_name_is_refused(site_db: SiteDatabase) -> None:
    # libpq connects to hostaddr but checks the certificate against the Server= name.
    elsewhere = site_db.reader_connection_string.replace(
        "Server=127.0.0.1;", "Server=sitedb.contoso.example;"
    ).replace("pqopt={", "pqopt={hostaddr=127.0.0.1 ")
    sleeps: list[float] = []
    with client(elsewhere, sleeps) as reader, pytest.raises(SiteDatabaseRefused) as caught:
        reader.ping()
    assert 'does not match host name "sitedb.contoso.example"' in str(caught.value)
    assert TLS_HINT in str(caught.value) and sleeps == []


def test_libpq_environment_cannot_weaken_the_connection(
    site_db: SiteDatabase, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attacker = LocalCA(tmp_path)
    monkeypatch.setenv("PGSSLMODE", "disable")
    monkeypatch.setenv("PGSSLROOTCERT", str(attacker.bundle_path))
    monkeypatch.setenv("PGREQUIRESSL", "0")
    assert ssl_in_use(site_db.reader_connection_string)[0]
    untrusting = site_db.reader_connection_string.replace(
        str(site_db.ca_bundle_path), str(attacker.bundle_path)
    )
    with pytest.raises(pyodbc.Error, match="certificate verify failed"):
        pyodbc.connect(untrusting, autocommit=True, timeout=10)
