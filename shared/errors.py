"""Typed exceptions: each says what failed and what the operator should check."""

from __future__ import annotations

from collections.abc import Sequence


class CmRemediateError(Exception):
    """Base class of every error cm-remediate raises on purpose."""


class ConfigurationError(CmRemediateError):
    """A setting or the rules file is missing or malformed: nothing runs until it is fixed.

    ``problems`` holds one self-contained line per problem (the health endpoint lists
    them); the message is what an operator reads in a log or on the command line.
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems is not None else [message]

    @classmethod
    def of_settings(cls, problems: Sequence[str]) -> ConfigurationError:
        """The error for setting problems, one per line under "invalid settings:"."""
        return cls(settings_message(problems), problems)


def settings_message(problems: Sequence[str]) -> str:
    """Setting problems as an operator reads them: one per line under a heading."""
    return "invalid settings:\n  " + "\n  ".join(problems)


class SiteDatabaseError(CmRemediateError):
    """The site database could not be read."""


class SiteDatabaseUnavailable(SiteDatabaseError):
    """The site database did not answer (network, timeout, restart): worth retrying."""


class SiteDatabaseRefused(SiteDatabaseError):
    """The site database answered with an error that retrying will not fix
    (login failed, missing permission, missing view)."""


class StorageError(CmRemediateError):
    """The storage account (queue, exporter state) could not be used."""


class QueueMessageError(CmRemediateError):
    """A queue message does not follow the contract (docs/queue-message.md)."""


class ServiceUnavailable(CmRemediateError):
    """A remote service was throttled, failing or unreachable after every retry: the
    message is tried again later."""


class ServiceRefused(CmRemediateError):
    """A remote service answered no; retrying the same request will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TargetRefused(CmRemediateError):
    """The target said no for this request (unknown collection, refused rule): recorded
    as ``target-refused``; the message completes."""
