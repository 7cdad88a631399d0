"""Status messages and sites from the site database stand-in (``devstack.sitedb``), as
the SMS Provider's classes show them: ``SMS_StatusMessage``, ``SMS_StatMsgWithInsStrings``,
``SMS_StatMsgInsStrings`` and ``SMS_Site``.

Rows are read through the reader login over ODBC, so only committed rows are visible,
exactly as through SQL: a ``LateCommit`` that has not committed is invisible here too.
The selective parts of a query go down to SQL (comparisons of numbers and of ``Time``,
``SiteCode`` equality, the order, the page size); the whole parsed ``$filter`` then runs
on what comes back, so the semantics are the parser's. A page the filter thins out is
refilled from the same snapshot (REPEATABLE READ), so it is never short while more rows
match.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Self, TypeVar

import pyodbc

from devstack.adminservice.calls import StatusQuery
from devstack.adminservice.entities import (
    _INS_STRING_PROPERTIES,
    _INSERTION_STRINGS,
    _KEYS,
    _STATUS_MESSAGE_PROPERTIES,
    Entity,
    _iso,
)
from devstack.adminservice.filter import Comparison, conjuncts
from devstack.adminservice.listing import Listing
from devstack.adminservice.odata import ODataError

if TYPE_CHECKING:
    from devstack.sitedb import SiteDatabase

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_VIEWS: Final = {
    "SMS_StatusMessage": "v_StatusMessage",
    "SMS_StatMsgWithInsStrings": "v_StatMsgWithInsStrings",
    "SMS_StatMsgInsStrings": "v_StatMsgInsStrings",
}
_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "SMS_StatusMessage": tuple(_STATUS_MESSAGE_PROPERTIES),
    "SMS_StatMsgWithInsStrings": (*_STATUS_MESSAGE_PROPERTIES, *_INSERTION_STRINGS),
    "SMS_StatMsgInsStrings": tuple(_INS_STRING_PROPERTIES),
}
# Ordered columns that may be NULL: only these need NULLS FIRST/LAST, which would keep
# PostgreSQL from reading the others in index order.
_NULLABLE: Final = frozenset({"ProcessID", "ThreadID", "Win32Error"})
_SQL_OPERATORS: Final = {"eq": "=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
# Site codes are stored in upper case: such a literal compares alike in SQL and here.
_SITE_CODE: Final = re.compile(r"[A-Za-z0-9]{3}")
#: A current-branch build number, for SMS_Site.Version.
SITE_VERSION: Final = "5.00.9128.1000"
_FIRST_REFILL: Final = 500


def _unavailable(error: pyodbc.Error) -> ODataError:
    log.warning("AdminService simulator: the site database query failed: %s", error)
    return ODataError(
        500,
        "The SMS Provider could not query the site database: Generic failure (0x80041001).",
        code="InternalServerError",
    )


class _Connections:
    """Idle ODBC connections of one login, reused; each use is one read-only
    REPEATABLE READ snapshot, rolled back at its end."""

    def __init__(self, connection_string: str) -> None:
        self._connection_string = connection_string
        self._lock = threading.Lock()
        self._idle: list[pyodbc.Connection] = []

    def run(self, work: Callable[[pyodbc.Cursor], _T]) -> _T:
        """``work`` in one snapshot; a reused connection that fails (the server went
        away and came back) is replaced, a new one that fails is a 500."""
        while True:
            connection, reused = self._take()
            try:
                cursor = connection.cursor()
                result = work(cursor)
                cursor.close()
                connection.rollback()
            except pyodbc.Error as error:
                self._discard(connection)
                if reused:
                    continue
                raise _unavailable(error) from None
            except BaseException:
                self._discard(connection)
                raise
            with self._lock:
                self._idle.append(connection)
            return result

    def _take(self) -> tuple[pyodbc.Connection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        try:
            connection = pyodbc.connect(self._connection_string, autocommit=True, timeout=10)
        except pyodbc.Error as error:
            raise _unavailable(error) from None
        try:
            # One snapshot per use: a page refilled by a second SELECT sees the same rows.
            connection.execute(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ"
            )
            connection.autocommit = False
        except pyodbc.Error as error:
            self._discard(connection)
            raise _unavailable(error) from None
        return connection, False

    @staticmethod
    def _discard(connection: pyodbc.Connection) -> None:
        with contextlib.suppress(pyodbc.Error):
            connection.close()

    def close(self) -> None:
        """Close the idle connections (new ones open on the next use)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            self._discard(connection)


class StatusMessageReader:
    """The status message classes and SMS_Site, read from the site database.

    ``connection_string`` is the reader login's; ``sites_connection_string``, if given,
    a login that may read ``site_record_id_ranges``, so SMS_Site also lists registered
    sites without messages. ResourceID is always null (the stand-in has no such column)
    unless a test sets it per RecordID with :meth:`set_resource_id`.
    """

    def __init__(
        self, connection_string: str, *, sites_connection_string: str | None = None
    ) -> None:
        self._messages = _Connections(connection_string)
        self._registry = _Connections(sites_connection_string) if sites_connection_string else None
        self._lock = threading.Lock()
        self._resource_ids: dict[int, int] = {}

    @classmethod
    def for_site_database(cls, database: SiteDatabase) -> Self:
        """Messages as the database's reader login; registered sites as its owner (the
        stand-in's own table of sites is no view the reader may read)."""
        return cls(
            database.reader_connection_string,
            sites_connection_string=database.admin_connection_string,
        )

    def set_resource_id(self, record_id: int, resource_id: int | None) -> None:
        """The ResourceID a message shows in SMS_StatMsgWithInsStrings (None: null)."""
        with self._lock:
            if resource_id is None:
                self._resource_ids.pop(record_id, None)
            else:
                self._resource_ids[record_id] = resource_id

    def close(self) -> None:
        """Close idle connections; the reader still works afterwards."""
        self._messages.close()
        if self._registry is not None:
            self._registry.close()

    # -- the status message classes ----------------------------------------------------

    def query(self, listing: Listing) -> tuple[list[Entity], int]:
        """The entities ``listing`` asks for, and how many rows SQL returned."""
        entity_set = listing.entity_set
        columns = _COLUMNS[entity_set]
        pushed = _pushed_conditions(listing, columns)
        params = [param for _, param in pushed]
        where = f" WHERE {' AND '.join(sql for sql, _ in pushed)}" if pushed else ""
        select = f"SELECT {', '.join(columns)} FROM {_VIEWS[entity_set]}{where}"
        order = _order_sql(listing, columns)
        with self._lock:
            resource_ids = dict(self._resource_ids)

        def entity(row: pyodbc.Row) -> Entity:
            found: Entity = dict(zip(columns, row, strict=True))
            if "Time" in found:
                found["Time"] = _iso(found["Time"], fraction=True)
            if entity_set == "SMS_StatMsgWithInsStrings":
                found["ResourceID"] = resource_ids.get(found["RecordID"])
            return found

        def whole(cursor: pyodbc.Cursor) -> tuple[list[Entity], int]:
            keys = ", ".join(_KEYS[entity_set])
            rows = cursor.execute(f"{select} ORDER BY {keys}", *params).fetchall()
            return listing.answer([entity(row) for row in rows]), len(rows)

        def paged(cursor: pyodbc.Cursor) -> tuple[list[Entity], int]:
            assert listing.top is not None
            wanted = listing.skip + listing.top
            matched: list[Entity] = []
            read = offset = 0
            batch = wanted
            while len(matched) < wanted:
                rows = cursor.execute(
                    f"{select} ORDER BY {order} LIMIT ? OFFSET ?", *params, batch, offset
                ).fetchall()
                read += len(rows)
                found = (entity(row) for row in rows)
                matched += [e for e in found if listing.filter is None or listing.filter(e)]
                if len(rows) < batch:
                    break
                offset += batch
                batch = max(2 * batch, _FIRST_REFILL)  # the filter thins: read more at once
            return listing.page(matched), read

        if listing.top == 0:
            return [], 0
        if order is None or listing.top is None:
            return self._messages.run(whole)
        return self._messages.run(paged)

    # -- SMS_Site ------------------------------------------------------------------------

    def sites(self) -> list[Entity]:
        """A primary site for every site code of a message or registered in the database."""
        codes = set(self._messages.run(_column("SELECT DISTINCT SiteCode FROM v_StatusMessage")))
        if self._registry is not None:
            codes |= set(self._registry.run(_column("SELECT site_code FROM site_record_id_ranges")))
        return [
            {
                "SiteCode": code,
                "SiteName": f"Site {code}",
                "Type": 2,  # primary site
                "Version": SITE_VERSION,
                "Status": 1,  # active
            }
            for code in sorted({code.upper() for code in codes})
        ]


def _column(sql: str) -> Callable[[pyodbc.Cursor], list[str]]:
    return lambda cursor: [str(row[0]) for row in cursor.execute(sql).fetchall()]


def _pushed_conditions(listing: Listing, columns: tuple[str, ...]) -> list[tuple[str, object]]:
    """SQL for the parts of the filter every row satisfies and SQL can check as the
    parser does: each is a superset of the parser's answer, never a narrower one."""
    if listing.filter is None:
        return []
    pushed: list[tuple[str, object]] = []
    for part in conjuncts(listing.filter):
        if (
            not isinstance(part, Comparison)
            or part.name not in columns
            or part.function is not None
            or part.operator not in _SQL_OPERATORS
        ):
            continue
        operator, value = _SQL_OPERATORS[part.operator], part.value
        if isinstance(value, datetime):
            # Bound as text and cast: no driver rounds the microseconds.
            naive = value.astimezone(UTC).replace(tzinfo=None)
            pushed.append((f"{part.name} {operator} CAST(? AS timestamp)", naive.isoformat(" ")))
        elif isinstance(value, int) and not isinstance(value, bool):
            pushed.append((f"{part.name} {operator} ?", value))
        elif part.name == "SiteCode" and isinstance(value, str) and _SITE_CODE.fullmatch(value):
            pushed.append(("SiteCode = ?", value))
    return pushed


def _order_sql(listing: Listing, columns: tuple[str, ...]) -> str | None:
    """ORDER BY for the listing's order, the keys breaking ties; None when a property
    of the order is no column (ResourceID): then Python orders."""
    if any(name not in columns for name, _ in listing.order):
        return None
    items = []
    for name, descending in listing.order:
        direction = "DESC" if descending else "ASC"
        if name in _NULLABLE:  # null sorts first, as SQL Server sorts it
            direction += " NULLS LAST" if descending else " NULLS FIRST"
        items.append(f"{name} {direction}")
    ordered = {name for name, _ in listing.order}
    items += [f"{key} ASC" for key in _KEYS[listing.entity_set] if key not in ordered]
    return ", ".join(items)


def describe(listing: Listing, options: Mapping[str, str]) -> StatusQuery:
    """What a status message query asks for, for the call log."""
    message_ids: set[int] = set()
    site_codes: set[str] = set()
    bounded: set[str] = set()
    for part in [] if listing.filter is None else conjuncts(listing.filter):
        if not isinstance(part, Comparison) or part.function is not None or part.value is None:
            continue
        if part.name == "MessageID" and part.operator == "eq" and isinstance(part.value, int):
            message_ids.add(part.value)
        elif part.name == "SiteCode" and isinstance(part.value, str):
            site_codes.add(part.value)
        elif part.operator != "ne":
            bounded.add(part.name)
    return StatusQuery(
        entity_set=listing.entity_set,
        filter=options.get("$filter"),
        orderby=options.get("$orderby"),
        top=listing.top,
        skip=listing.skip,
        message_ids=frozenset(message_ids),
        site_codes=frozenset(site_codes),
        record_id_bound="RecordID" in bounded,
        time_bound="Time" in bounded,
    )
