"""Azure Key Vault's secrets data plane over HTTPS (RBAC permission model), as strict
as the service, proven against azure-keyvault-secrets' own ``SecretClient``.

Typical use, with the Entra ID simulator as the tenant::

    with EntraSimulator(ca, user_realm=False) as entra:
        entra.add_api(VAULT_RESOURCE, scopes=("user_impersonation",), app_id=VAULT_APP_ID)
        app = entra.add_client(CLIENT_ID, secret=CLIENT_SECRET)
        with KeyVaultSimulator.for_entra(ca, entra, vault_name="cm-kv") as kv:
            kv.grant(app.service_principal_id, "Key Vault Secrets Officer")
            credential = ClientSecretCredential(          # azure-identity, as deployed
                entra.tenant_id, CLIENT_ID, CLIENT_SECRET,
                authority=entra.authority_host, disable_instance_discovery=True,
                connection_verify=str(ca.bundle_path))    # or EntraAppCredential (MSAL)
            client = SecretClient(kv.vault_url, credential, transport=kv.transport())
            client.set_secret("msal-token-cache", blob)   # the challenge dance happens
            kv.secret_versions("msal-token-cache")        # what the vault holds
            kv.requests                                   # method, path, principal, status

Why ``https://<name>.vault.azure.net`` and a transport: the SDK sends its first request
without a token, reads the 401's challenge, and refuses a challenge whose resource
(``https://vault.azure.net``) is not a parent domain of the vault's host on port 443
(``verify_challenge_resource``, on by default; ``test_the_sdk_refuses_the_vault_at_localhost``
shows it). ``verify_challenge_resource=False`` would let a client pass here with a URL
production refuses, and the vault's ids and nextLinks (``https://<name>.vault.azure.net``,
``...:443/...``) would point nowhere. So the vault keeps its real name, the simulator's
certificate is for that name, and :meth:`KeyVaultSimulator.transport` (an azure-core
``RequestsTransport``) connects that name's port 443 to the simulator's loopback port,
as a hosts-file entry would, for that client only. An app under test needs one seam:
``SecretClient(vault_url, credential, **client_options)`` with ``transport=``.

Facts the simulator keeps, and where they were found:

- The challenge: ``WWW-Authenticate: Bearer authorization="<authority host>/<tenant>",
  resource="https://vault.azure.net"`` on every 401 (real 401 headers quoted in an
  azure-sdk-for-js sample issue; the SDK's ``http_challenge.py`` takes the tenant from
  the authorization path and asks for ``<resource>/.default``). Without a token the body
  is ``{"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a
  Bearer or PoP token."}}`` (issues quoting the service).
- Refused tokens, code ``Unauthorized``, messages as quoted from the service in issues:
  wrong ``aud`` "AKV10022: Invalid audience. Expected https://vault.azure.net or
  cfa8b339-..., found: ..." (``https://vault.azure.net/`` with a slash is refused too);
  wrong ``iss`` "AKV10032: Invalid issuer. Expected one of ..., found ..."; unknown
  signing key "AKV10046: Unable to resolve the key used for signature validation...";
  expired "[TokenExpired] Error validating token: 'S2S12086'." Key Vault tokens are v1:
  ``iss`` ``https://sts.windows.net/<tenant>/``, ``aud`` as the scope named it.
- RBAC 403: code ``Forbidden``, ``innererror.code`` ``ForbiddenByRbac``, the message's
  lines "Caller is not authorized...", "Caller: appid=...;oid=...;iss=...",
  "Action: '<data action>'", "Resource: '/subscriptions/.../vaults/<vault>/secrets/<name>'",
  "Assignment: (not found)", ... "Vault: <vault>;location=<region>" (issues quoting the
  service). Roles (Azure built-in roles reference): Secrets User = getSecret +
  readMetadata; Reader = readMetadata; Secrets Officer = ``vaults/secrets/*``;
  Administrator = ``vaults/*``. Assignable at vault or single-secret scope.
- Secrets (REST reference, api-version 7.4, and about-secrets): ``PUT /secrets/{name}``
  adds a version (32 hex digits) whatever came before; ``GET /secrets/{name}[/{version}]``
  (the SDK asks ``/secrets/{name}/`` for the latest); names ``^[0-9a-zA-Z-]{1,127}$``
  else 400 ``BadParameter`` "The request URI contains an invalid name: <name>"; names
  compare without case; unknown: 404 ``SecretNotFound`` "A secret with (name/id) ... was
  not found in this key vault. ..."; values at most 25 KB (25600 bytes, as the Azure CLI
  counts), ``contentType`` at most 255 characters; api-version required; bundle
  ``value``, ``contentType``, ``id`` = ``https://<vault>/secrets/<name>/<version>``,
  ``attributes`` (``enabled``, ``nbf``/``exp`` if set, ``created``, ``updated``,
  ``recoveryLevel``, ``recoverableDays``), ``tags``. No ETag, no If-Match. ``exp`` and
  ``nbf`` are informational for secrets (not enforced); a disabled version's GET is 403
  ``Forbidden`` "Operation get is not allowed on a disabled secret." (``SecretDisabled``).
- Lists: at most 25 per page (``maxresults`` 1-25), items without values, an absolute
  ``nextLink`` with ``:443`` written out (the SDK's challenge cache says so) and a
  ``$skiptoken``. Soft delete: a deleted secret's name gives 409 ``Conflict``
  (``ObjectIsDeletedButRecoverable``) until it is purged or recovered.
- The SDK (4.12) sends api-version 2026-04-01 by default; every version it knows is served.

Chosen here, unverified against the service (switchable where it matters):

- Order: token (401), api-version (400), route and name (404/405/400), RBAC (403), then
  the secret: a caller without a role gets 403 for a secret that does not exist.
- Wording of the messages not listed above (malformed or badly signed token, ``nbf``,
  api-version, ``maxresults``, body, value size, unknown route, the 409, faults).
- Clock skew ``leeway_seconds=300`` (Microsoft.IdentityModel's default).
- Role assignments act at once (the service takes up to minutes to propagate them).
- Versions are listed in version-id order (the service promises no order); the versions
  of an unknown secret are an empty list; reading a deleted secret needs readMetadata.
- A version's ``id`` spells the name as the request that made it did.
- ``recoveryLevel`` is always ``Recoverable+Purgeable`` (90 days, no purge protection).
- Backup, restore and the deleted-secrets listing answer 501 (not simulated).

Test hooks: ``grant``/``revoke``/``role_assignments``, ``put_secret``,
``secret_versions``, ``latest``, ``is_deleted``, ``requests`` (:class:`VaultRequest`),
``http_log``, ``fail_next`` (429/5xx before authentication), ``set_down``,
``latency_seconds``, ``internal_errors``.

The modules, from the wire inwards: ``simulator`` (the service and its hooks),
``dispatch`` (one request, in the order above), ``auth`` (tokens and the challenge, on
the AdminService simulator's JWKS cache), ``rbac`` (assignments and the 403), ``store``
(versions, soft delete, the JSON bundles), ``errors``, ``model`` (names, limits, roles,
records), ``client`` (the routing transport and :class:`EntraAppCredential`).
"""

from devstack.keyvault.auth import DEFAULT_LEEWAY_SECONDS, Caller, TokenValidator
from devstack.keyvault.client import EntraAppCredential, vault_session, vault_transport
from devstack.keyvault.errors import VaultError
from devstack.keyvault.model import (
    API_VERSIONS,
    MAX_RESULTS,
    MAX_VALUE_BYTES,
    ROLES,
    VAULT_APP_ID,
    VAULT_RESOURCE,
    VAULT_SCOPE,
    DataAction,
    DeletedSecret,
    RoleAssignment,
    SecretVersion,
    VaultRequest,
)
from devstack.keyvault.simulator import DEFAULT_SUBSCRIPTION_ID, KeyVaultSimulator

__all__ = [
    "API_VERSIONS",
    "DEFAULT_LEEWAY_SECONDS",
    "DEFAULT_SUBSCRIPTION_ID",
    "MAX_RESULTS",
    "MAX_VALUE_BYTES",
    "ROLES",
    "VAULT_APP_ID",
    "VAULT_RESOURCE",
    "VAULT_SCOPE",
    "Caller",
    "DataAction",
    "DeletedSecret",
    "EntraAppCredential",
    "KeyVaultSimulator",
    "RoleAssignment",
    "SecretVersion",
    "TokenValidator",
    "VaultError",
    "VaultRequest",
    "vault_session",
    "vault_transport",
]
