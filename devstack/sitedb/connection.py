"""ODBC connection strings for the site database: psqlODBC with TLS checked by libpq.

The production code reads the site database through pyodbc; here the very same code
reaches PostgreSQL through psqlODBC ("PostgreSQL Unicode") and unixODBC, with the
options below, so SQL behaves as close to SQL Server's driver as psqlODBC allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from devstack.ports import LOOPBACK

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
    """An ODBC connection string for pyodbc with ODBC_OPTIONS; libpq
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
