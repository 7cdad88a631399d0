"""Keyset paging on RecordID, the one way every status message source pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from shared.domain.status_messages import StatusMessage

#: Reads up to ``limit`` messages with RecordID above ``after_record_id``, oldest first.
ReadPage = Callable[[int, int], list[StatusMessage]]


def keyset_pages(
    read_page: ReadPage, *, after_record_id: int, page_size: int
) -> Iterator[list[StatusMessage]]:
    """Pages of ``read_page`` until a short or empty page: each next page starts above
    the last RecordID of the one before (no offsets, so a row that commits meanwhile
    cannot shift the pages)."""
    cursor = after_record_id
    while True:
        page = read_page(cursor, page_size)
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        cursor = page[-1].record_id
