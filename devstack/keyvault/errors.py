"""Key Vault's error answers: ``{"error": {"code", "message", "innererror"?}}``."""

from __future__ import annotations

import json
from collections.abc import Mapping

from devstack.https import HttpResponse

_JSON: str = "application/json; charset=utf-8"
_HELP_LINK = "https://go.microsoft.com/fwlink/?linkid=2125182"


class VaultError(Exception):
    """An error answer; ``inner_code`` becomes ``innererror.code``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        inner_code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code
        self.headers = dict(headers or {})

    def response(self) -> HttpResponse:
        """The HTTP answer."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.inner_code is not None:
            error["innererror"] = {"code": self.inner_code}
        body = json.dumps({"error": error}, separators=(",", ":")).encode("utf-8")
        return HttpResponse(self.status, body, _JSON, dict(self.headers))


def bad_parameter(message: str) -> VaultError:
    """A 400 ``BadParameter``."""
    return VaultError(400, "BadParameter", message)


def invalid_name(name: str) -> VaultError:
    """A name outside ``^[0-9a-zA-Z-]{1,127}$`` (the service's wording)."""
    return bad_parameter(f"The request URI contains an invalid name: {name}")


def secret_not_found(name_or_id: str) -> VaultError:
    """A 404 ``SecretNotFound`` (the service's wording)."""
    return VaultError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {name_or_id} was not found in this key vault. If you "
        "recently deleted this secret you may be able to recover it using the correct "
        f"recovery command. For help resolving this issue, please see {_HELP_LINK}",
    )


def deleted_secret_not_found(name: str) -> VaultError:
    """A 404 for a deleted secret that is not there (wording unverified)."""
    return VaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")


def secret_disabled(operation: str) -> VaultError:
    """A 403 for reading a disabled version (the service's wording)."""
    return VaultError(
        403,
        "Forbidden",
        f"Operation {operation} is not allowed on a disabled secret.",
        inner_code="SecretDisabled",
    )


def deleted_but_recoverable(name: str) -> VaultError:
    """A 409: the name belongs to a soft-deleted secret (inner code as the service's;
    the message wording is unverified)."""
    return VaultError(
        409,
        "Conflict",
        f"Secret {name} is currently in a deleted but recoverable state, and its name "
        "cannot be reused; in this state, the secret can only be recovered or purged.",
        inner_code="ObjectIsDeletedButRecoverable",
    )


def forbidden_by_rbac(
    *,
    caller: str,
    action: str,
    resource: str,
    vault: str,
    location: str,
) -> VaultError:
    """The 403 of a caller whose role assignments do not allow ``action`` on ``resource``,
    in the shape Key Vault answers with (the lines separated by CRLF)."""
    lines = (
        "Caller is not authorized to perform action on resource.",
        "If role assignments, deny assignments or role definitions were changed recently, "
        "please observe propagation time.",
        f"Caller: {caller}",
        f"Action: '{action}'",
        f"Resource: '{resource}'",
        "Assignment: (not found)",
        "DenyAssignmentId: null",
        "DecisionReason: null ",
        f"Vault: {vault};location={location}",
    )
    return VaultError(403, "Forbidden", "\r\n".join(lines) + "\r\n", inner_code="ForbiddenByRbac")


def not_simulated(method: str, path: str) -> VaultError:
    """A real route the simulator does not serve (backup, restore, deleted listing)."""
    return VaultError(
        501, "NotImplemented", f"{method} {path} is not simulated by the devstack Key Vault."
    )
