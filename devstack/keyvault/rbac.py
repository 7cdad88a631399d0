"""Azure RBAC for the vault's data plane: role assignments per principal at vault
scope or at one secret's scope, and the 403 Key Vault answers without one."""

from __future__ import annotations

import threading

from devstack.keyvault.auth import Caller
from devstack.keyvault.errors import VaultError, forbidden_by_rbac
from devstack.keyvault.model import ROLES, DataAction, RoleAssignment


class RoleAssignments:
    """Who may do what; assignments take effect at once (real RBAC takes minutes to
    propagate, which the 403 message itself mentions)."""

    def __init__(
        self, *, vault_name: str, subscription_id: str, resource_group: str, location: str
    ) -> None:
        self.vault_name = vault_name
        self.location = location
        # The resource ID as the service writes it in a 403: lower-case path words.
        self.vault_resource_id = (
            f"/subscriptions/{subscription_id}/resourcegroups/{resource_group.lower()}"
            f"/providers/microsoft.keyvault/vaults/{vault_name.lower()}"
        )
        self._lock = threading.Lock()
        self._assignments: list[RoleAssignment] = []

    def grant(self, principal_id: str, role: str, secret: str | None = None) -> RoleAssignment:
        """Assign a built-in role to a principal (object ID) at vault scope or, with
        ``secret``, at that secret's scope. Granting twice keeps one assignment."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; known: {', '.join(sorted(ROLES))}")
        assignment = RoleAssignment(principal_id.lower(), role, _scope(secret))
        with self._lock:
            if assignment not in self._assignments:
                self._assignments.append(assignment)
        return assignment

    def revoke(self, principal_id: str, role: str, secret: str | None = None) -> bool:
        """Remove that assignment; False if there was none."""
        assignment = RoleAssignment(principal_id.lower(), role, _scope(secret))
        with self._lock:
            if assignment in self._assignments:
                self._assignments.remove(assignment)
                return True
        return False

    def clear(self) -> None:
        """Remove every assignment."""
        with self._lock:
            self._assignments.clear()

    @property
    def assignments(self) -> list[RoleAssignment]:
        """Every assignment, oldest first."""
        with self._lock:
            return list(self._assignments)

    def allows(self, principal_id: str, action: DataAction, secret: str | None) -> bool:
        """Whether a vault-scope assignment, or one at ``secret``'s scope, allows ``action``.

        ``secret=None`` is an action on the vault itself (listing): only vault-scope
        assignments count.
        """
        principal = principal_id.lower()
        scope = _scope(secret)
        with self._lock:
            return any(
                a.principal_id == principal
                and action in ROLES[a.role]
                and (a.secret is None or a.secret == scope)
                for a in self._assignments
            )

    def check(self, caller: Caller, action: DataAction, secret: str | None) -> None:
        """Raise the 403 unless ``caller`` may do ``action`` (on ``secret``)."""
        if self.allows(caller.oid, action, secret):
            return
        raise self.forbidden(caller, action, secret)

    def forbidden(self, caller: Caller, action: DataAction, secret: str | None) -> VaultError:
        """The 403 Key Vault answers."""
        resource = self.vault_resource_id
        if secret is not None:
            resource += f"/secrets/{secret.lower()}"
        return forbidden_by_rbac(
            caller=caller.describe(),
            action=action.value,
            resource=resource,
            vault=self.vault_name,
            location=self.location,
        )


def _scope(secret: str | None) -> str | None:
    return None if secret is None else secret.lower()
