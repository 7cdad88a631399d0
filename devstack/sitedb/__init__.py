"""A throwaway PostgreSQL 15 standing in for the ConfigMgr site database (SQL Server).

The production code reads the site database through pyodbc; here the very same code
reaches a real PostgreSQL server through psqlODBC ("PostgreSQL Unicode") and unixODBC.
``devstack/sitedb_schema.sql`` gives it ConfigMgr's view names, column types and
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

The modules:

- ``database``: ``SiteDatabase``, the service that ties the others together;
- ``cluster``: the PostgreSQL binaries, initdb, start, stop, the watchdog, cleanup;
- ``schema``: the schema file, the logins, the reader's views and their grants;
- ``connection``: ODBC connection strings (psqlODBC options, quoting);
- ``record_ids``: per-site RecordID ranges and sequences;
- ``loading``: status messages and devices as rows, bulk-inserted as JSON;
- ``membership``: the rows of ``v_FullCollectionMembership``, a collection at once or one
  resource's change;
- ``late_commit``: ``LateCommit``, an insert left uncommitted on purpose.
"""

from devstack.sitedb.cluster import SiteDatabaseError
from devstack.sitedb.connection import ODBC_DRIVER, ODBC_OPTIONS, connection_string
from devstack.sitedb.database import SiteDatabase
from devstack.sitedb.late_commit import LateCommit
from devstack.sitedb.schema import (
    ADMIN_LOGIN,
    BASE_TABLES,
    READER_LOGIN,
    READER_VIEWS,
    SCHEMA_PATH,
)

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
