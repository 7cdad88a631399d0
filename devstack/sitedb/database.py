"""The site database service: a private PostgreSQL cluster with ConfigMgr's views.

``SiteDatabase`` ties the pieces together: it creates and starts a ``Cluster``,
provisions the database and its logins (``schema``), hands out connection strings
(``connection``), numbers and loads rows (``record_ids``, ``loading``) through one
shared owner connection, and tracks the ``LateCommit`` transactions it left open.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self

import pyodbc

from devstack.datagen.model import GeneratedDevice, GeneratedStatusMessage, Workload
from devstack.lifecycle import Service
from devstack.ports import LOOPBACK
from devstack.sitedb.cluster import Cluster, destroy, pg_bin_dir, server_user
from devstack.sitedb.connection import connection_string
from devstack.sitedb.late_commit import LateCommit
from devstack.sitedb.loading import (
    Payload,
    build_payload,
    device_rows,
    write_devices,
    write_payload,
)
from devstack.sitedb.membership import (
    change_member,
    member_rows,
    read_members,
    replace_collection,
    valid_collection_id,
)
from devstack.sitedb.record_ids import assign_record_ids, ensure_site, slot_base, valid_site_code
from devstack.sitedb.schema import (
    ADMIN_LOGIN,
    READER_LOGIN,
    READER_VIEWS,
    SCHEMA_PATH,
    setup_script,
)
from devstack.tls import LocalCA

log = logging.getLogger(__name__)

_ANALYZE_AFTER: Final = 1000


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
        self.top_level_site_code = (
            valid_site_code(top_level_site_code) if top_level_site_code else None
        )
        self.log_statements = log_statements
        self._given_ca = ca
        self._ca: LocalCA | None = None
        self._admin_password = secrets.token_urlsafe(24)
        self._reader_password = secrets.token_urlsafe(24)
        self._cluster: Cluster | None = None
        self._finalizer: weakref.finalize[..., Any] | None = None
        self._admin: pyodbc.Connection | None = None
        self._lock = threading.RLock()
        self._late: weakref.WeakSet[LateCommit] = weakref.WeakSet()
        self.start_seconds: float | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The loopback TCP port (kept across stop(keep_data=True) / start())."""
        port = self._cluster.port if self._cluster is not None else None
        if port is None:
            raise RuntimeError("the site database has not been started")
        return port

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

    def _started(self) -> Cluster:
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
                self._cluster.launch(self.port, log_statements=self.log_statements)
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
            # The port goes with the cluster: a later start() makes a new one on a new port.
            finalizer, self._finalizer, self._cluster = self._finalizer, None, None
            self._ca = None  # an own CA went with the directory
            if finalizer is not None:
                finalizer()  # runs destroy() once, and never again at exit

    def _create(self) -> None:
        pg_bin = pg_bin_dir()
        user = server_user()
        root = Path(tempfile.mkdtemp(prefix="cm-sitedb-"))
        cluster = Cluster(root=root, pg_bin=pg_bin, user=user)
        self._cluster = cluster
        self._finalizer = weakref.finalize(self, destroy, cluster)
        cluster.initdb(owner=ADMIN_LOGIN, password=self._admin_password)
        self._ca = cluster.setup_tls(self._given_ca)
        cluster.launch_on_free_port(log_statements=self.log_statements)
        cluster.start_watchdog()
        self._setup()

    def _setup(self) -> None:
        """Create the reader login and the database, load the schema, grant the views."""
        self._started().psql(
            setup_script(),
            port=self.port,
            user=ADMIN_LOGIN,
            password=self._admin_password,
            ca_bundle=self.ca_bundle_path,
            database="postgres",
            variables={
                "dbname": self.database,
                "reader": READER_LOGIN,
                "reader_password": self._reader_password,
                "schema": str(SCHEMA_PATH),
            },
        )

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
                ensure_site(cursor, valid_site_code(code))

    def site_record_id_base(self, site_code: str) -> int:
        """The first RecordID of the site's range (registers the site if new)."""
        code = valid_site_code(site_code)
        with self._transaction() as cursor:
            ensure_site(cursor, code)
            return slot_base(cursor, code)

    # -- loading data -----------------------------------------------------------------------

    def _payload(self, messages: Sequence[GeneratedStatusMessage], ids: Sequence[int]) -> Payload:
        return build_payload(messages, ids, top_level_site_code=self.top_level_site_code)

    def insert_status_messages(self, messages: Iterable[GeneratedStatusMessage]) -> list[int]:
        """Insert messages with their insertion strings and attributes; one transaction.

        Returns the RecordIDs in message order: the message's own ``record_id`` when set
        (it must lie in its site's range), else the next value of the site's sequence.
        """
        batch = list(messages)
        if not batch:
            return []
        with self._transaction() as cursor:
            ids = assign_record_ids(cursor, batch)
            write_payload(cursor, self._payload(batch, ids))
        if len(batch) >= _ANALYZE_AFTER:
            # Fresh statistics right away (autovacuum would take up to a minute), so the
            # planner sees thousands of rows rather than an empty table.
            with self._transaction() as cursor:
                cursor.execute("ANALYZE status_messages, status_message_ins_strings")
        return ids

    def insert_devices(self, devices: Iterable[GeneratedDevice]) -> None:
        """Insert ``v_R_System`` records."""
        rows = device_rows(devices)
        if rows:
            with self._transaction() as cursor:
                write_devices(cursor, rows)

    def delete_devices(self, resource_ids: Iterable[int]) -> None:
        """Delete ``v_R_System`` records, as Delete Obsolete Client Discovery Data or an
        administrator cleaning up a duplicate does."""
        ids = [int(r) for r in resource_ids]
        if ids:
            with self._transaction() as cursor:
                cursor.executemany("DELETE FROM systems WHERE resource_id = ?", [(i,) for i in ids])

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

    # -- collection membership (v_FullCollectionMembership) -----------------------------

    @property
    def site_code(self) -> str | None:
        """The SiteCode of membership rows: ``XYZ`` of a database named ``CM_XYZ``."""
        match = re.fullmatch(r"CM_([A-Za-z0-9]{3})", self.database)
        return match.group(1).upper() if match else None

    def set_collection_members(
        self,
        collection_id: str,
        members: Mapping[int, bool],
        *,
        names: Mapping[int, str | None] | None = None,
    ) -> None:
        """Replace the collection's rows in ``v_FullCollectionMembership`` with
        ``members`` (ResourceID -> IsDirect), in one transaction; ``names`` fills Name
        (NULL where missing). One bulk insert: 20,000 rows take a fraction of a second."""
        key = valid_collection_id(collection_id)
        rows = member_rows(members, names)
        with self._transaction() as cursor:
            replace_collection(cursor, key, rows, self.site_code)
        if len(rows) >= _ANALYZE_AFTER:
            with self._transaction() as cursor:
                cursor.execute("ANALYZE collection_members")

    def apply_membership_change(
        self,
        collection_id: str,
        resource_id: int,
        is_direct: bool | None,
        *,
        name: str | None = None,
    ) -> None:
        """One row of ``v_FullCollectionMembership``: the resource is a member (IsDirect
        ``is_direct``), or with ``is_direct=None`` is not (its row removed, if any)."""
        key = valid_collection_id(collection_id)
        with self._transaction() as cursor:
            change_member(cursor, key, resource_id, is_direct, name=name, site_code=self.site_code)

    def collection_members(self, collection_id: str) -> dict[int, bool]:
        """The collection's rows (ResourceID -> IsDirect), read as the owner."""
        with self._transaction() as cursor:
            return read_members(cursor, valid_collection_id(collection_id))

    def load_workload(self, workload: Workload) -> list[int]:
        """Register the workload's sites in order, insert its devices and messages."""
        self.register_sites(workload.sites)
        self.insert_devices(workload.devices)
        return self.insert_status_messages(workload.messages)

    def begin_late_commit(self, message: GeneratedStatusMessage) -> LateCommit:
        """Insert ``message`` in a transaction of its own and leave it uncommitted."""
        code = valid_site_code(message.site_code)
        with self._transaction() as cursor:
            sequence = ensure_site(cursor, code)  # committed: DDL outside the late tx
        connection = self.connect_admin(autocommit=False)
        try:
            cursor = connection.cursor()
            if message.record_id is None:
                row = cursor.execute("SELECT nextval(CAST(? AS regclass))", sequence).fetchone()
                record_id = int(row[0])
            else:
                record_id = message.record_id
            write_payload(cursor, self._payload([message], [record_id]))
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
                    "status_messages", "systems", "collection_members", "proxy_routings",
                    "site_record_id_ranges",
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
