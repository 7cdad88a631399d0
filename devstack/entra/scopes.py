"""What a ``scope`` parameter asks for: one API, some of its scopes, OpenID scopes."""

from __future__ import annotations

from dataclasses import dataclass

from devstack.entra.directory import Directory
from devstack.entra.model import OIDC_SCOPES, EntraApi
from devstack.entra.refusals import Refusal, missing


@dataclass(frozen=True, slots=True)
class ResolvedScope:
    """What a ``scope`` parameter asks for."""

    api: EntraApi
    identifier: str
    scopes: tuple[str, ...]
    oidc: frozenset[str]


def resolve_scope(directory: Directory, raw: str, *, app_only: bool) -> ResolvedScope:
    """The API and scopes ``raw`` names, or Entra's refusal of it.

    ``app_only`` (client credentials) allows only ``<resource>/.default``.
    """
    items = raw.split()
    if not items:
        raise missing("scope")
    oidc = frozenset(i.lower() for i in items if i.lower() in OIDC_SCOPES)
    resource_items = [i for i in items if i.lower() not in OIDC_SCOPES]
    if app_only and (oidc or len(resource_items) != 1 or not raw.endswith("/.default")):
        raise Refusal(
            "invalid_scope",
            1002012,
            f"The provided value for scope {raw} is not valid. Client credential flows "
            "must have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    if not resource_items:
        # Entra would answer with a Microsoft Graph token; there is no Graph here.
        raise Refusal(
            "invalid_scope",
            70011,
            f"The provided value for the input parameter 'scope' is not valid. The scope "
            f"'{raw}' names no resource (Microsoft Graph is not simulated).",
        )
    resources: dict[str, str] = {}
    names: list[str] = []
    for item in resource_items:
        resource, slash, name = item.rpartition("/")
        if not slash or not resource or not name:
            raise Refusal(
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid. "
                f"The scope {item} is not valid.",
            )
        resources.setdefault(resource.lower(), resource)
        names.append(name)
    if len(resources) > 1:
        raise Refusal(
            "invalid_scope",
            28000,
            "Provided value for the input parameter scope is not valid because it "
            f"contains more than one resource. Scope {raw} is not valid.",
        )
    resource = next(iter(resources.values()))
    try:
        api = directory.api(resource)
    except KeyError:
        raise Refusal(
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named "
            f"{directory.tenant_name}. This can happen if the application has not been "
            "installed by the administrator of the tenant or consented to by any user in "
            "the tenant. You might have sent your authentication request to the wrong "
            "tenant.",
        ) from None
    identifier = next(i for i in directory.api_identifiers(api) if i.lower() == resource.lower())
    if ".default" in names:
        if len(names) > 1:
            raise Refusal(
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid. "
                f"The scope {raw} is not valid: .default cannot be combined with "
                "other scopes of the resource.",
            )
        granted = () if app_only else api.scopes
    else:
        known = {s.lower(): s for s in api.scopes}
        unknown = [n for n in names if n.lower() not in known]
        if unknown:
            raise Refusal(
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid. "
                f"The scope {identifier}/{unknown[0]} is not valid.",
            )
        granted = tuple(dict.fromkeys(known[n.lower()] for n in names))
    return ResolvedScope(api, identifier, granted, oidc)
