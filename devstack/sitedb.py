"""A throwaway PostgreSQL 15 standing in for the ConfigMgr site database (SQL Server).

The production code reads the site database through pyodbc; here the very same code
reaches a real PostgreSQL server through psqlODBC ("PostgreSQL Unicode") and unixODBC.
``sitedb_schema.sql`` gives it ConfigMgr's view names, column types and
case-insensitive text. Typical use::

    with SiteDatabase() as db:
        db.load_workload(generate_workload(seed=1))
        connection = pyodbc.connect(db.reader_connection_string, autocommit=True)

Lifecycle. ``start()`` creates a cluster in a new temporary directory on a free
loopback port (about a second); ``stop()`` shuts it down (``pg_ctl stop -m fast``) and
deletes the directory. ``stop(keep_data=True)`` shuts the server down but keeps the
cluster, and a later ``start()`` brings it back **on the same port with the data** (for
fault injection: clients see the server vanish and come back); add ``crash=True`` to
stop it like a power cut instead of a clean shutdown. A finalizer and a tiny
watchdog process (which notices when this process dies, even by SIGKILL) stop the
server and delete the directory, so a crashed test run leaves nothing behind.

TLS. The server speaks TLS only (``ssl = on``, and pg_hba.conf admits TCP clients
through ``hostssl`` lines alone), with a certificate for 127.0.0.1 and localhost issued
by a local CA: ``SiteDatabase(ca=...)`` shares the stack's :class:`~devstack.tls.LocalCA`,
else the cluster makes its own. Connection strings ask psqlODBC for
``SSLmode=verify-full`` and pass the CA file to libpq (``pqopt={sslrootcert=...}``), so
the client checks the chain and the host name, as cm-remediate demands of any
SITE_DB_CONNECTION.

Logins. The owner login (``admin_connection_string``) loads data; the reader login
(``reader_connection_string``) may only SELECT the ``v_`` views and
``vProxy_Routings``, read-only, like the least-privilege SQL login in production.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Self

import pyodbc

from devstack.datagen import (
    ATTRIBUTE_GENERIC,
    GENERIC_ATTRIBUTE_VALUE,
    GENERIC_MESSAGE_IDS,
    INSERTION_STRING_COUNT,
    RECORD_ID_RANGE,
    GeneratedDevice,
    GeneratedStatusMessage,
    Workload,
)
from devstack.lifecycle import Service
from devstack.ports import LOOPBACK, free_port, wait_for_port
from devstack.tls import LOCAL_NAMES, LocalCA

log = logging.getLogger(__name__)

SCHEMA_PATH: Final = Path(__file__).resolve().parent / "sitedb_schema.sql"
ODBC_DRIVER: Final = "PostgreSQL Unicode"

# psqlODBC options in every connection string (tests/devstack/test_sitedb.py checks
# what each one is for):
#   UseServerSidePrepare=1  parameters travel as real bound parameters (Parse/Bind,
#                           "$1" in the server's statement text), never spliced into
#                           the SQL text by the driver;
#   BoolsAsChar=0           a boolean comes back as bool, not the strings '1'/'0';
#   LFConversion=0          no LF -> CR/LF rewriting of text (the Windows default is 1);
#   SSLmode=verify-full     TLS, with the chain and the host name checked (libpq's
#                           only mode that does both; cm-remediate refuses the others);
#   CommLog=0;Debug=0       no per-connection driver logs. (This machine's odbcinst.ini
#                           sets CommLog=1 for the driver, so each process still
#                           leaves a one-line /tmp/psqlodbc_<prog>_<user><pid>.log.)
ODBC_OPTIONS: Final[tuple[tuple[str, str], ...]] = (
    ("UseServerSidePrepare", "1"),
    ("BoolsAsChar", "0"),
    ("LFConversion", "0"),
    ("SSLmode", "verify-full"),
    ("CommLog", "0"),
    ("Debug", "0"),
)

ADMIN_LOGIN: Final = "cm_admin"
READER_LOGIN: Final = "cm_reader"
#: What the reader login may SELECT: the documented views, nothing else.
READER_VIEWS: Final = (
    "v_StatusMessage",
    "v_StatMsgInsStrings",
    "v_StatMsgAttributes",
    "v_StatMsgWithInsStrings",
    "v_R_System",
    "vProxy_Routings",
)
#: Base tables behind the views (the reader login must not read them).
BASE_TABLES: Final = (
    "status_messages",
    "status_message_ins_strings",
    "status_message_attributes",
    "systems",
    "proxy_routings",
    "site_record_id_ranges",
)

_SITE_CODE = re.compile(r"^[A-Z0-9]{3}$")
_START_ATTEMPTS: Final = 3
_START_TIMEOUT: Final = 30
_STOP_TIMEOUT: Final = 30
_LOG_TAIL_LINES: Final = 30
_ANALYZE_AFTER: Final = 1000

# Runs in its own process, started by start(). It blocks on a pipe whose only writer is
# this process; EOF means we are gone (closed it on purpose, or died, even by SIGKILL),
# and then it stops the server and deletes the directory. No-op when already done.
_WATCHDOG: Final = r"""
import os, shutil, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
pg_ctl, data, root, user = sys.argv[1:5]
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
if os.path.exists(os.path.join(data, "postmaster.pid")):
    kw = {"user": user, "group": user, "extra_groups": []} if user else {}
    subprocess.run([pg_ctl, "stop", "-D", data, "-m", "immediate", "-w", "-t", "30"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, **kw)
shutil.rmtree(root, ignore_errors=True)
"""


class SiteDatabaseError(RuntimeError):
    """The stand-in site database could not be started or used."""


def _pg_bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres live ($CM_PG_BIN, else Debian's PostgreSQL 15)."""
    candidates = [os.environ.get("CM_PG_BIN", ""), "/usr/lib/postgresql/15/bin"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise SiteDatabaseError(
        "PostgreSQL 15 server binaries not found: install the Debian package postgresql-15 "
        "or set CM_PG_BIN to the directory holding pg_ctl"
    )


def _server_user() -> str | None:
    """initdb and postgres refuse to run as root: use the postgres OS user then."""
    return "postgres" if os.geteuid() == 0 else None


def _as_server_user(user: str | None) -> dict[str, Any]:
    return {"user": user, "group": user, "extra_groups": []} if user else {}


def _odbc_braced(value: str) -> str:
    """An ODBC connection string value in braces (``}`` doubled), safe for any text."""
    return "{" + value.replace("}", "}}") + "}"


def _libpq_quoted(value: str) -> str:
    """A libpq conninfo value in single quotes (``\\`` and ``'`` escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def connection_string(
    *,
    port: int,
    database: str,
    user: str,
    password: str,
    ca_bundle: Path,
    host: str = LOOPBACK,
) -> str:
    """An ODBC connection string for pyodbc with this module's psqlODBC options; libpq
    trusts only ``ca_bundle`` for the server certificate."""
    parts = [
        ("Driver", "{" + ODBC_DRIVER + "}"),
        ("Server", host),
        ("Port", str(port)),
        ("Database", database),
        ("Uid", user),
        ("Pwd", _odbc_braced(password)),
        *ODBC_OPTIONS,
        # psqlODBC hands pqopt to libpq as it is: the CA that signed the server certificate.
        ("pqopt", _odbc_braced(f"sslrootcert={_libpq_quoted(str(ca_bundle))}")),
    ]
    return ";".join(f"{key}={value}" for key, value in parts) + ";"


@dataclass
class _Cluster:
    """What the finalizer needs to clean up; holds no reference to the SiteDatabase."""

    root: Path
    pg_bin: Path
    user: str | None
    watchdog: subprocess.Popen[bytes] | None = None
    running: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def chown(self, *paths: Path) -> None:
        """Hand paths to the server's OS user (when the server runs as one)."""
        if self.user is not None:
            for path in paths:
                shutil.chown(path, user=self.user, group=self.user)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.pg_bin / "pg_ctl"), *args, "-D", str(self.data)],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            **_as_server_user(self.user),
        )

    def stop_server(self, *, crash: bool = False) -> None:
        """pg_ctl stop -m fast (ends sessions, clean checkpoint), then -m immediate.

        ``crash`` goes straight to -m immediate: no checkpoint, recovery at next start.
        """
        if not (self.data / "postmaster.pid").exists():
            self.running = False
            return
        for mode in ("immediate",) if crash else ("fast", "immediate"):
            result = self.pg_ctl("stop", "-m", mode, "-w", "-t", str(_STOP_TIMEOUT), check=False)
            if result.returncode == 0 or not (self.data / "postmaster.pid").exists():
                break
            log.warning("pg_ctl stop -m %s failed: %s", mode, result.stderr.strip())
        self.running = False


def _destroy(cluster: _Cluster) -> None:
    """Stop the server, release the watchdog and delete the directory (idempotent)."""
    try:
        cluster.stop_server()
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)
        watchdog, cluster.watchdog = cluster.watchdog, None
        if watchdog is not None:
            with contextlib.suppress(OSError):
                if watchdog.stdin is not None:
                    watchdog.stdin.close()
            try:
                watchdog.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()


def _private_dir(path: Path) -> Path:
    """A new directory only its owner may enter."""
    path.mkdir(mode=0o700)
    return path


def _check_text(value: str | None, what: str) -> None:
    # SQL Server can store U+0000; PostgreSQL text cannot. Say so instead of failing deep
    # inside the JSON loader.
    if value is not None and "\x00" in value:
        raise ValueError(f"{what} contains NUL (U+0000), which PostgreSQL text cannot hold")


def _site_code(site_code: str) -> str:
    code = site_code.upper()
    if not _SITE_CODE.match(code):
        raise ValueError(f"site code {site_code!r} is not 3 letters or digits")
    return code


def _iso(value: datetime) -> str:
    if value.tzinfo is not None:
        raise ValueError(f"{value!r}: the site database stores naive UTC datetimes")
    return value.isoformat(sep=" ", timespec="microseconds")


class LateCommit:
    """A status message inserted in a transaction that has not committed yet.

    Its RecordID came from the site's sequence when it was begun, so rows inserted
    afterwards get higher RecordIDs and may become visible first: the case a plain
    ``RecordID > watermark`` export skips. ``commit()`` or ``rollback()`` ends it; a
    ``with`` block rolls back unless committed.
    """

    def __init__(self, connection: pyodbc.Connection, record_id: int) -> None:
        self._connection: pyodbc.Connection | None = connection
        self.record_id = record_id

    @property
    def pending(self) -> bool:
        """True until commit() or rollback()."""
        return self._connection is not None

    def commit(self) -> None:
        """Commit: the message becomes visible to readers."""
        connection = self._take()
        try:
            connection.commit()
        finally:
            connection.close()

    def rollback(self) -> None:
        """Roll back: the message never existed, its RecordID stays unused (a gap)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.rollback()
        except pyodbc.Error:
            pass  # the server went away: the transaction is gone anyway
        finally:
            with contextlib.suppress(pyodbc.Error):
                connection.close()

    def _take(self) -> pyodbc.Connection:
        connection, self._connection = self._connection, None
        if connection is None:
            raise RuntimeError("this late commit has already been committed or rolled back")
        return connection

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rollback()


@dataclass
class _Payload:
    messages: list[dict[str, object]] = field(default_factory=list)
    strings: list[dict[str, object]] = field(default_factory=list)
    attributes: list[dict[str, object]] = field(default_factory=list)


_INSERT_MESSAGES: Final = """
INSERT INTO status_messages (record_id, module_name, message_id, severity, message_type,
    component, machine_name, site_code, time_utc, process_id, thread_id, per_client,
    win32_error, top_level_site_code)
SELECT r.record_id, r.module_name, r.message_id, r.severity, r.message_type, r.component,
       r.machine_name, r.site_code, r.time_utc, r.process_id, r.thread_id, r.per_client,
       r.win32_error, r.top_level_site_code
FROM json_to_recordset(CAST(? AS json)) AS r(record_id bigint, module_name text,
    message_id integer, severity integer, message_type integer, component text,
    machine_name text, site_code text, time_utc timestamp, process_id integer,
    thread_id integer, per_client integer, win32_error integer, top_level_site_code text)
"""
_INSERT_STRINGS: Final = """
INSERT INTO status_message_ins_strings (record_id, ins_str_index, ins_str_value)
SELECT r.record_id, r.ins_str_index, r.ins_str_value
FROM json_to_recordset(CAST(? AS json))
     AS r(record_id bigint, ins_str_index integer, ins_str_value text)
"""
_INSERT_ATTRIBUTES: Final = """
INSERT INTO status_message_attributes (record_id, attribute_id, attribute_value,
    attribute_time)
SELECT r.record_id, r.attribute_id, r.attribute_value, r.attribute_time
FROM json_to_recordset(CAST(? AS json))
     AS r(record_id bigint, attribute_id integer, attribute_value text,
          attribute_time timestamp)
"""
_INSERT_DEVICES: Final = """
INSERT INTO systems (resource_id, name, netbios_name, sms_unique_identifier,
    resource_domain_or_workgr, full_domain_name, client, active, obsolete, decommissioned,
    creation_date, client_version, operating_system)
SELECT r.resource_id, r.name, r.netbios_name, r.sms_unique_identifier, r.domain,
       r.full_domain, r.client, r.active, r.obsolete, r.decommissioned, r.creation_date,
       r.client_version, r.operating_system
FROM json_to_recordset(CAST(? AS json)) AS r(resource_id integer, name text,
    netbios_name text, sms_unique_identifier text, domain text, full_domain text,
    client integer, active integer, obsolete integer, decommissioned integer,
    creation_date timestamp, client_version text, operating_system text)
"""


class SiteDatabase(Service):
    """A private PostgreSQL cluster with ConfigMgr's site database views.

    ``database`` is the database name (``CM_<SiteCode>`` in production).
    ``top_level_site_code`` fills TopLevelSiteCode (default: each message's own site).
    ``log_statements`` logs every statement, with its bound parameter values, to
    ``log_path`` (handy to see exactly what the production SQL sends).
    ``ca`` issues the server certificate (default: a CA of the cluster's own).
    """

    def __init__(
        self,
        *,
        database: str = "CM_PS1",
        top_level_site_code: str | None = None,
        log_statements: bool = False,
        ca: LocalCA | None = None,
    ) -> None:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", database):
            raise ValueError(f"database name {database!r}: letters, digits, underscore")
        self.database = database
        self.top_level_site_code = _site_code(top_level_site_code) if top_level_site_code else None
        self.log_statements = log_statements
        self._given_ca = ca
        self._ca: LocalCA | None = None
        self._admin_password = secrets.token_urlsafe(24)
        self._reader_password = secrets.token_urlsafe(24)
        self._port: int | None = None
        self._cluster: _Cluster | None = None
        self._finalizer: weakref.finalize[..., Any] | None = None
        self._admin: pyodbc.Connection | None = None
        self._lock = threading.RLock()
        self._late: weakref.WeakSet[LateCommit] = weakref.WeakSet()
        self.start_seconds: float | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The loopback TCP port (kept across stop(keep_data=True) / start())."""
        if self._port is None:
            raise RuntimeError("the site database has not been started")
        return self._port

    @property
    def running(self) -> bool:
        """True while the server is up."""
        return self._cluster is not None and self._cluster.running

    @property
    def directory(self) -> Path:
        """The temporary directory holding the cluster, its socket and its log."""
        return self._started().root

    @property
    def log_path(self) -> Path:
        """The server's log file (deleted with the directory by stop())."""
        return self._started().log_path

    @property
    def ca_bundle_path(self) -> Path:
        """PEM file of the CA that issued the server certificate (what clients trust)."""
        if self._ca is None:
            raise RuntimeError("the site database has not been started")
        return self._ca.bundle_path

    @property
    def reader_connection_string(self) -> str:
        """ODBC connection string of the read-only login (SELECT on the views only)."""
        return connection_string(
            port=self.port, database=self.database, user=READER_LOGIN,
            password=self._reader_password, ca_bundle=self.ca_bundle_path,
        )  # fmt: skip

    @property
    def admin_connection_string(self) -> str:
        """ODBC connection string of the owner login (may do anything)."""
        return connection_string(
            port=self.port, database=self.database, user=ADMIN_LOGIN,
            password=self._admin_password, ca_bundle=self.ca_bundle_path,
        )  # fmt: skip

    def _started(self) -> _Cluster:
        if self._cluster is None:
            raise RuntimeError("the site database has not been started")
        return self._cluster

    def connect_reader(self, *, autocommit: bool = True) -> pyodbc.Connection:
        """A new pyodbc connection as the reader login."""
        return pyodbc.connect(self.reader_connection_string, autocommit=autocommit, timeout=10)

    def connect_admin(self, *, autocommit: bool = True) -> pyodbc.Connection:
        """A new pyodbc connection as the owner login."""
        return pyodbc.connect(self.admin_connection_string, autocommit=autocommit, timeout=10)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        """Create and start the cluster, or restart one stopped with keep_data=True."""
        with self._lock:
            if self.running:
                raise RuntimeError("the site database is already running")
            began = time.monotonic()
            if self._cluster is not None:
                # Resume: same directory, same port, same data.
                self._launch(self._cluster, self.port)
            else:
                try:
                    self._create()
                except BaseException:
                    self.stop()
                    raise
            self.start_seconds = time.monotonic() - began
            log.info(
                "site database %s on %s:%d started in %.2fs (%s)",
                self.database, LOOPBACK, self.port, self.start_seconds, self.directory,
            )  # fmt: skip
            return self

    def stop(self, *, keep_data: bool = False, crash: bool = False) -> None:
        """Stop the server. Without keep_data, also delete the cluster (idempotent).

        With ``keep_data=True`` the cluster, its port and its data stay, and ``start()``
        brings the same server back. ``crash=True`` stops it like a power cut
        (``pg_ctl stop -m immediate``): committed data survives, the next start runs
        crash recovery, and RecordID sequences may jump ahead by up to 32 (PostgreSQL
        WAL-logs sequence values 32 ahead, much as SQL Server caches identity values).
        Uncommitted late commits are lost either way.
        """
        with self._lock:
            self._close_connections()
            if self._cluster is None:
                return
            if keep_data:
                self._cluster.stop_server(crash=crash)
                return
            finalizer, self._finalizer, self._cluster = self._finalizer, None, None
            self._port = None  # a later start() makes a new cluster on a new port
            self._ca = None  # an own CA went with the directory
            if finalizer is not None:
                finalizer()  # runs _destroy once, and never again at exit

    def _create(self) -> None:
        pg_bin = _pg_bin_dir()
        user = _server_user()
        root = Path(tempfile.mkdtemp(prefix="cm-sitedb-"))
        cluster = _Cluster(root=root, pg_bin=pg_bin, user=user)
        self._cluster = cluster
        self._finalizer = weakref.finalize(self, _destroy, cluster)
        (root / "run").mkdir()
        cluster.chown(root, root / "run")
        self._initdb(cluster)
        self._setup_tls(cluster)
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = free_port()
            try:
                self._launch(cluster, port)
            except SiteDatabaseError:
                # free_port() closes its socket before returning: someone may have taken it.
                if attempt == _START_ATTEMPTS or "already in use" not in self._log_tail():
                    raise
                log.warning("site database lost a port race on %d, retrying", port)
            else:
                break
        self._start_watchdog(cluster)
        self._setup()

    def _initdb(self, cluster: _Cluster) -> None:
        pwfile = cluster.root / "pwfile"
        pwfile.write_text(self._admin_password + "\n")
        pwfile.chmod(0o600)
        cluster.chown(pwfile)
        try:
            subprocess.run(
                [
                    str(cluster.pg_bin / "initdb"), "-D", str(cluster.data),
                    "-U", ADMIN_LOGIN, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions",
                ],
                check=True, capture_output=True, text=True, cwd=cluster.root,
                **_as_server_user(cluster.user),
            )  # fmt: skip
        except subprocess.CalledProcessError as error:
            raise SiteDatabaseError(f"initdb failed:\n{error.stdout}\n{error.stderr}") from None
        finally:
            pwfile.unlink(missing_ok=True)

    def _setup_tls(self, cluster: _Cluster) -> None:
        """Server certificate and key for the cluster; TCP clients must use TLS."""
        self._ca = self._given_ca or LocalCA(_private_dir(cluster.root / "ca"))
        tls = _private_dir(cluster.root / "tls")
        certificate, key = self._ca.issue_files(tls, *LOCAL_NAMES)
        # pg_hba.conf: password logins, and over TCP only through TLS ("hostssl"): a
        # client that turns TLS off is refused by the server as well.
        hba = cluster.data / "pg_hba.conf"
        hba.write_text(
            f"local all all scram-sha-256\nhostssl all all {LOOPBACK}/32 scram-sha-256\n"
        )
        # PostgreSQL refuses a key that others may read, or that it does not own.
        cluster.chown(tls, certificate, key, hba)

    def _write_config(self, cluster: _Cluster, port: int) -> None:
        # postgresql.auto.conf is read last, so these win over postgresql.conf.
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(port),
            "unix_socket_directories": str(cluster.root / "run"),
            # A throwaway cluster: flushing to disk buys nothing and costs time. Commits
            # still reach the WAL before returning (synchronous_commit stays on), so a
            # crash (stop(crash=True)) loses nothing that was committed.
            "fsync": "off",
            "full_page_writes": "off",
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "timezone": "UTC",
            "log_timezone": "UTC",
            "lc_messages": "C",
            "max_connections": "100",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_statement": "all" if self.log_statements else "none",
            "ssl": "on",
            "ssl_cert_file": str(cluster.root / "tls" / "server.crt"),
            "ssl_key_file": str(cluster.root / "tls" / "server.key"),
            "ssl_min_protocol_version": "TLSv1.2",
        }
        text = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
        auto = cluster.data / "postgresql.auto.conf"
        auto.write_text(text)
        cluster.chown(auto)

    def _launch(self, cluster: _Cluster, port: int) -> None:
        self._write_config(cluster, port)
        with cluster.log_path.open("a") as log_file:
            log_file.write(f"=== start on port {port} at {time.strftime('%H:%M:%S')}\n")
        cluster.chown(cluster.log_path)
        # pg_ctl daemonizes the postmaster in its own session: a Ctrl-C meant for pytest
        # does not reach it, and stop() / the watchdog shut it down instead.
        result = cluster.pg_ctl(
            "start", "-w", "-t", str(_START_TIMEOUT), "-l", str(cluster.log_path),
            "-s", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            cluster.stop_server()
            raise SiteDatabaseError(
                f"PostgreSQL did not start on port {port}: {result.stderr.strip()}"
                f"\n--- {cluster.log_path} ---\n{self._log_tail()}"
            )
        cluster.running = True
        self._port = port
        wait_for_port(port, timeout=_START_TIMEOUT, what="PostgreSQL")

    def _start_watchdog(self, cluster: _Cluster) -> None:
        cluster.watchdog = subprocess.Popen(
            [
                sys.executable, "-c", _WATCHDOG, str(cluster.pg_bin / "pg_ctl"),
                str(cluster.data), str(cluster.root), cluster.user or "",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _psql(self, script: str, *, database: str = "postgres") -> None:
        """Run a psql script as the owner (setup only: DDL, roles, grants)."""
        env = {
            **os.environ,
            "PGPASSWORD": self._admin_password,
            "PGCONNECT_TIMEOUT": "10",
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(self.ca_bundle_path),
        }
        cluster = self._started()
        try:
            subprocess.run(
                [
                    str(cluster.pg_bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                    "-h", LOOPBACK, "-p", str(self.port), "-U", ADMIN_LOGIN, "-d", database,
                    "-v", f"dbname={self.database}", "-v", f"reader={READER_LOGIN}",
                    "-v", f"reader_password={self._reader_password}",
                    "-v", f"schema={SCHEMA_PATH}",
                ],
                input=script, check=True, capture_output=True, text=True, env=env,
                cwd=cluster.root,
            )  # fmt: skip
        except subprocess.CalledProcessError as error:
            raise SiteDatabaseError(f"psql setup failed:\n{error.stderr}") from None

    def _setup(self) -> None:
        grants = "\n".join(f'GRANT SELECT ON {view} TO :"reader";' for view in READER_VIEWS)
        self._psql(
            f"""
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password';
-- Read-only at the session level too, like a login that only has db_datareader-ish rights.
ALTER ROLE :"reader" SET default_transaction_read_only = on;
CREATE DATABASE :"dbname";
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"dbname" TO :"reader";
\\connect :"dbname"
\\i :schema
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"reader";
{grants}
"""
        )

    def _log_tail(self) -> str:
        if self._cluster is None:
            return ""
        try:
            lines = self._cluster.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def _close_connections(self) -> None:
        for late in list(self._late):
            late.rollback()
        self._drop_admin()

    def _drop_admin(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(pyodbc.Error):
                self._admin.close()
            self._admin = None

    # -- admin connection ---------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[pyodbc.Cursor]:
        """A cursor on the shared owner connection, committed at the end of the block."""
        with self._lock:
            if not self.running:
                raise RuntimeError("the site database is not running")
            if self._admin is None:
                self._admin = self.connect_admin(autocommit=False)
                # Fail fast rather than hang if some test holds a conflicting lock.
                self._admin.execute("SET lock_timeout = '15s'")
                self._admin.commit()
            connection = self._admin
            cursor = connection.cursor()
            try:
                yield cursor
                connection.commit()
            except BaseException:
                try:
                    connection.rollback()
                except pyodbc.Error:
                    self._drop_admin()  # broken (server gone?): reconnect next time
                raise
            finally:
                with contextlib.suppress(pyodbc.Error):
                    cursor.close()

    # -- RecordID ranges ------------------------------------------------------------------

    def register_sites(self, site_codes: Sequence[str]) -> None:
        """Give sites their RecordID ranges in this order (slot i -> (i + 1) * 2^56).

        Sites already registered keep their slot; new ones get the next free slots.
        Sites seen first by an insert are registered on demand in order of appearance.
        """
        with self._transaction() as cursor:
            for code in site_codes:
                self._ensure_site(cursor, _site_code(code))

    def site_record_id_base(self, site_code: str) -> int:
        """The first RecordID of the site's range (registers the site if new)."""
        code = _site_code(site_code)
        with self._transaction() as cursor:
            self._ensure_site(cursor, code)
            return self._slot_base(cursor, code)

    def _ensure_site(self, cursor: pyodbc.Cursor, code: str) -> str:
        row = cursor.execute(
            "SELECT sequence_name FROM site_record_id_ranges WHERE site_code = ?", code
        ).fetchone()
        if row is not None:
            return str(row[0])
        slot_row = cursor.execute(
            "SELECT COALESCE(MAX(slot), 0) + 1 FROM site_record_id_ranges"
        ).fetchone()
        slot = int(slot_row[0])
        base = slot * RECORD_ID_RANGE
        name = f"record_id_{code.lower()}"  # code is [A-Z0-9]{3}: safe as an identifier
        # Sequences, like SQL Server identity values, are not transactional: a value
        # handed out is never handed out again, even if its transaction rolls back.
        cursor.execute(
            f"CREATE SEQUENCE {name} AS bigint START WITH {base} MINVALUE {base} "
            f"MAXVALUE {base + RECORD_ID_RANGE - 1} NO CYCLE"
        )
        cursor.execute(
            "INSERT INTO site_record_id_ranges (site_code, slot, sequence_name) "
            "VALUES (?, ?, ?)",
            code, slot, name,
        )  # fmt: skip
        return name

    def _assign_record_ids(
        self, cursor: pyodbc.Cursor, messages: Sequence[GeneratedStatusMessage]
    ) -> list[int]:
        sequences: dict[str, str] = {}
        needed: dict[str, int] = {}
        for message in messages:
            code = _site_code(message.site_code)
            if code not in sequences:
                sequences[code] = self._ensure_site(cursor, code)
            if message.record_id is None:
                needed[code] = needed.get(code, 0) + 1
        reserved: dict[str, Iterator[int]] = {}
        for code, count in needed.items():
            rows = cursor.execute(
                "SELECT nextval(CAST(? AS regclass)) FROM generate_series(1, CAST(? AS integer))",
                sequences[code], count,
            ).fetchall()  # fmt: skip
            reserved[code] = iter(sorted(int(row[0]) for row in rows))
        ids: list[int] = []
        explicit_max: dict[str, int] = {}
        for message in messages:
            code = message.site_code.upper()
            if message.record_id is None:
                ids.append(next(reserved[code]))
                continue
            base = self._slot_base(cursor, code)
            if not base <= message.record_id < base + RECORD_ID_RANGE:
                raise ValueError(
                    f"RecordID {message.record_id} is outside site {code}'s range "
                    f"{base}..{base + RECORD_ID_RANGE - 1}"
                )
            ids.append(message.record_id)
            explicit_max[code] = max(explicit_max.get(code, 0), message.record_id)
        for code, highest in explicit_max.items():
            # Keep the sequence above explicitly numbered rows, as IDENTITY_INSERT does.
            cursor.execute(
                "SELECT setval(CAST(? AS regclass), GREATEST(CAST(? AS bigint), "
                "COALESCE(pg_sequence_last_value(CAST(? AS regclass)), 0)))",
                sequences[code], highest, sequences[code],
            )  # fmt: skip
        return ids

    @staticmethod
    def _slot_base(cursor: pyodbc.Cursor, code: str) -> int:
        row = cursor.execute(
            "SELECT slot FROM site_record_id_ranges WHERE site_code = ?", code
        ).fetchone()
        return int(row[0]) * RECORD_ID_RANGE

    # -- loading data -----------------------------------------------------------------------

    def _payload(self, messages: Sequence[GeneratedStatusMessage], ids: Sequence[int]) -> _Payload:
        payload = _Payload()
        for message, record_id in zip(messages, ids, strict=True):
            _check_text(message.machine_name, "MachineName")
            when = _iso(message.time_utc)
            code = message.site_code.upper()
            generic = message.message_id in GENERIC_MESSAGE_IDS
            # Stable, plausible process/thread IDs (the export never reads them).
            seed = zlib.crc32(f"{message.machine_name}|{message.component}".encode())
            payload.messages.append({
                "record_id": record_id,
                "module_name": message.module_name,
                "message_id": message.message_id,
                "severity": message.severity,  # set by GeneratedStatusMessage itself
                "message_type": message.message_type,
                "component": message.component,
                "machine_name": message.machine_name,
                "site_code": code,
                "time_utc": when,
                "process_id": 1000 + seed % 30000,
                "thread_id": 100 + (seed >> 16) % 9000,
                "per_client": 1 if message.module_name == "SMS Client" else 0,
                "win32_error": 0,
                "top_level_site_code": self.top_level_site_code or code,
            })  # fmt: skip
            for index, value in enumerate(message.insertion_strings[:INSERTION_STRING_COUNT]):
                if value is None:
                    continue  # no such string: no row, like ConfigMgr
                _check_text(value, f"InsertionString{index + 1}")
                payload.strings.append(
                    {"record_id": record_id, "ins_str_index": index, "ins_str_value": value}
                )
            if generic:
                payload.attributes.append({
                    "record_id": record_id,
                    "attribute_id": ATTRIBUTE_GENERIC,
                    "attribute_value": GENERIC_ATTRIBUTE_VALUE,
                    "attribute_time": when,
                })  # fmt: skip
        return payload

    @staticmethod
    def _write_payload(cursor: pyodbc.Cursor, payload: _Payload) -> None:
        # One bound JSON parameter per table: a single round trip each, no SQL text built
        # from values, and far faster than row-by-row executes through ODBC.
        for sql, rows in (
            (_INSERT_MESSAGES, payload.messages),
            (_INSERT_STRINGS, payload.strings),
            (_INSERT_ATTRIBUTES, payload.attributes),
        ):
            if rows:
                cursor.execute(sql, json.dumps(rows, ensure_ascii=False))

    def insert_status_messages(self, messages: Iterable[GeneratedStatusMessage]) -> list[int]:
        """Insert messages with their insertion strings and attributes; one transaction.

        Returns the RecordIDs in message order: the message's own ``record_id`` when set
        (it must lie in its site's range), else the next value of the site's sequence.
        """
        batch = list(messages)
        if not batch:
            return []
        with self._transaction() as cursor:
            ids = self._assign_record_ids(cursor, batch)
            self._write_payload(cursor, self._payload(batch, ids))
        if len(batch) >= _ANALYZE_AFTER:
            # Fresh statistics right away (autovacuum would take up to a minute), so the
            # planner sees thousands of rows rather than an empty table.
            with self._transaction() as cursor:
                cursor.execute("ANALYZE status_messages, status_message_ins_strings")
        return ids

    def insert_devices(self, devices: Iterable[GeneratedDevice]) -> None:
        """Insert ``v_R_System`` records."""
        rows: list[dict[str, object]] = []
        for device in devices:
            for value, what in ((device.name, "Name0"), (device.netbios_name, "Netbios_Name0")):
                _check_text(value, what)
            rows.append({
                "resource_id": device.resource_id,
                "name": device.name,
                "netbios_name": device.netbios_name,
                "sms_unique_identifier": device.sms_unique_identifier,
                "domain": device.domain,
                "full_domain": device.full_domain,
                "client": device.client,
                "active": device.active,
                "obsolete": device.obsolete,
                "decommissioned": device.decommissioned,
                "creation_date": _iso(device.creation_date),
                "client_version": "5.00.9128.1000" if device.client == 1 else None,
                "operating_system": "Microsoft Windows NT Workstation 10.0",
            })  # fmt: skip
        if rows:
            with self._transaction() as cursor:
                cursor.execute(_INSERT_DEVICES, json.dumps(rows, ensure_ascii=False))

    def set_proxy_routing(self, url: str | None) -> None:
        """Set (or with None remove) the AdminService URL published in vProxy_Routings."""
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM proxy_routings WHERE external_endpoint_name = 'AdminService'"
            )
            if url is not None:
                cursor.execute(
                    "INSERT INTO proxy_routings (external_endpoint_name, external_url, "
                    "proxy_service_name) VALUES ('AdminService', ?, 'CMG')",
                    url,
                )

    def load_workload(self, workload: Workload) -> list[int]:
        """Register the workload's sites in order, insert its devices and messages."""
        self.register_sites(workload.sites)
        self.insert_devices(workload.devices)
        return self.insert_status_messages(workload.messages)

    def begin_late_commit(self, message: GeneratedStatusMessage) -> LateCommit:
        """Insert ``message`` in a transaction of its own and leave it uncommitted."""
        code = _site_code(message.site_code)
        with self._transaction() as cursor:
            sequence = self._ensure_site(cursor, code)  # committed: DDL outside the late tx
        connection = self.connect_admin(autocommit=False)
        try:
            cursor = connection.cursor()
            if message.record_id is None:
                row = cursor.execute("SELECT nextval(CAST(? AS regclass))", sequence).fetchone()
                record_id = int(row[0])
            else:
                record_id = message.record_id
            self._write_payload(cursor, self._payload([message], [record_id]))
            cursor.close()
        except BaseException:
            connection.close()
            raise
        late = LateCommit(connection, record_id)
        self._late.add(late)
        return late

    def reset(self) -> None:
        """Delete every row and restart RecordIDs (sites get slots afresh on next use).

        Rolls back pending late commits. Uses DELETE rather than TRUNCATE, so readers
        that left a transaction open do not block it.
        """
        with self._lock:
            for late in list(self._late):
                late.rollback()
            with self._transaction() as cursor:
                names = [
                    str(row[0])
                    for row in cursor.execute(
                        "SELECT sequence_name FROM site_record_id_ranges"
                    ).fetchall()
                ]
                for table in (
                    "status_message_attributes", "status_message_ins_strings",
                    "status_messages", "systems", "proxy_routings", "site_record_id_ranges",
                ):  # fmt: skip
                    cursor.execute(f"DELETE FROM {table}")
                for name in names:
                    cursor.execute(f"DROP SEQUENCE IF EXISTS {name}")

    # -- reading (for tests and the demo) ---------------------------------------------------

    def count(self, view: str = "v_StatusMessage") -> int:
        """Rows in one of READER_VIEWS, read as the owner."""
        if view not in READER_VIEWS:
            raise ValueError(f"{view!r} is not one of the site database views")
        with self._transaction() as cursor:
            row = cursor.execute(f"SELECT COUNT(*) FROM {view}").fetchone()
        return int(row[0])


__all__ = [
    "ADMIN_LOGIN",
    "BASE_TABLES",
    "ODBC_DRIVER",
    "ODBC_OPTIONS",
    "READER_LOGIN",
    "READER_VIEWS",
    "SCHEMA_PATH",
    "LateCommit",
    "SiteDatabase",
    "SiteDatabaseError",
    "connection_string",
]
