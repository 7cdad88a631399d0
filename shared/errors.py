"""Typed exceptions: each says what failed and what the operator should check.

Every exception cm-remediate raises on purpose (a subclass under its base)::

    CmRemediateError
    ├── ConfigurationError               a setting or the rules file; nothing runs
    ├── SiteDatabaseError
    │   ├── SiteDatabaseUnavailable      transient
    │   │   └── RelayUnavailable         the hybrid connection: no listener, target down
    │   └── SiteDatabaseRefused          login, permission, missing view
    │       └── RelayRefused             the hybrid connection: token, rights, port name
    ├── StorageError                     queue, table or blob
    │   └── WatermarkConflict            the export state changed since it was read
    ├── QueueMessageError                recorded as rejected-input
    ├── ServiceUnavailable               transient: tried again later
    │   ├── AdminServiceUnavailable
    │   ├── WebServiceUnavailable
    │   └── TokenEndpointUnavailable     Entra ID did not answer
    ├── ServiceRefused (.status)         retrying will not help
    │   ├── AdminServiceRefused
    │   └── WebServiceRefused
    ├── TokenError                       Entra ID refused a token
    │   └── SignInNeeded                 the signed-in session is gone: cmremediate sign-in
    ├── TargetRefused                    recorded as target-refused
    ├── AddHeld                          the guard holds an add: held-rate-limit
    └── ClaimBusy                        another request is adding the same device
"""

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


class RelayUnavailable(SiteDatabaseUnavailable):
    """The tunnel to the site database through Azure Relay is down for now (no listener
    online, the listener cannot reach SQL Server, the relay did not answer)."""


class RelayRefused(SiteDatabaseRefused):
    """Azure Relay or the on-premises listener refused the tunnel (token, rights, port
    name): retrying will not help until the configuration is fixed."""


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


class AdminServiceUnavailable(ServiceUnavailable):
    """The AdminService was throttled, failing or unreachable after every retry."""


class AdminServiceRefused(ServiceRefused):
    """The AdminService answered no; retrying the same request will not help."""


class WebServiceUnavailable(ServiceUnavailable):
    """The web service did not answer, or was failing, after every retry."""


class WebServiceRefused(ServiceRefused):
    """The web service answered no."""


class TokenError(CmRemediateError):
    """Entra ID refused to issue a token; retrying will not help."""


class SignInNeeded(TokenError):
    """The AdminService session an admin opened (ADMINSERVICE_AUTH=refresh-token) is
    missing, expired or revoked: nothing works until someone runs
    ``cmremediate sign-in``; requests wait in the queue meanwhile."""


class TokenEndpointUnavailable(ServiceUnavailable):
    """Entra ID (or the network to it) did not answer; worth retrying later. Raised
    before the call that needed the token is sent, so that call changed nothing."""


class WatermarkConflict(StorageError):
    """Someone else wrote a site's export state since it was read (the ETag no longer
    matches); the exporter merges and saves again."""


class AddHeld(CmRemediateError):
    """The blast-radius guard holds this add for now (recorded as ``held-rate-limit``);
    the guard's slot for the add keeps its decision."""

    def __init__(self) -> None:
        super().__init__("held by the blast-radius guard")


class ClaimBusy(CmRemediateError):
    """Another request holds the claim on the same device and collection and is adding
    it now: this one waits, then looks again (``already-member`` once that settles)."""
