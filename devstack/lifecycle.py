"""The start/stop lifecycle the local servers share: ``with`` starts and stops."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """A local server: ``start()`` returns self, ``stop()`` is safe to call twice."""

    def start(self) -> Self:
        """Start the server and wait until it serves."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server."""
        raise NotImplementedError

    def _exit(self, failed: bool) -> None:
        """What leaving the ``with`` block does; ``failed`` if it raised."""
        self.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a half-started server must not outlive the failure
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc_type is not None)
