"""Keyset paging on RecordID, the one way every status message source pages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime

from shared.domain.status_messages import StatusMessage


class KeysetPaged(ABC):
    """A status message source that reads one page at a time; pages it on RecordID."""

    @abstractmethod
    def read_page(
        self,
        site_code: str,
        *,
        after_record_id: int,
        limit: int,
        since: datetime | None = None,
    ) -> list[StatusMessage]:
        """Up to ``limit`` messages of a site with RecordID above ``after_record_id``
        (and from ``since``), oldest first."""

    def iter_pages(
        self,
        site_code: str,
        *,
        after_record_id: int,
        page_size: int,
        since: datetime | None = None,
    ) -> Iterator[list[StatusMessage]]:
        """Pages of :meth:`read_page` until a short or empty page: each next page starts
        above the last RecordID of the one before (no offsets, so a row that commits
        meanwhile cannot shift the pages)."""
        cursor = after_record_id
        while True:
            page = self.read_page(site_code, after_record_id=cursor, limit=page_size, since=since)
            if not page:
                return
            yield page
            if len(page) < page_size:
                return
            cursor = page[-1].record_id
