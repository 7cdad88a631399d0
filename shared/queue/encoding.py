"""The queue's wire encoding: base64 of UTF-8, as the queue trigger expects."""

from __future__ import annotations

import base64
import binascii


def from_queue_text(content: str) -> str | None:
    """The text of a queue message as stored (base64 of UTF-8), or None when it is not
    base64: another writer sent it without TextBase64EncodePolicy."""
    try:
        return base64.b64decode(content, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def to_queue_text(text: str | bytes) -> str:
    """What goes on the queue for ``text``: base64 of its UTF-8, as the trigger expects."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")
