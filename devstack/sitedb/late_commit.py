"""A status message inserted but not yet committed: the case a naive export misses."""

from __future__ import annotations

import contextlib
from typing import Self

import pyodbc


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
