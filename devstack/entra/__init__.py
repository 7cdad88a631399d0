"""Entra ID's v2.0 token endpoint over HTTPS, faithful enough for MSAL to talk to.

Entra ID cannot run here, so this serves what MSAL 1.39 really asks of it, with the
shapes Entra answers with: the OpenID discovery document, the signing keys, the token
endpoint (``password``, ``client_credentials``, ``refresh_token``) and AADSTS errors.
Typical use::

    ca = LocalCA()
    with EntraSimulator(ca) as entra:
        entra.add_api()  # https://ConfigMgrService, scope user_impersonation
        entra.add_client(CLIENT_ID, public=True)
        entra.add_user("svc@contoso.example", "pw")
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify=
        session.verify = str(ca.bundle_path)
        app = msal.PublicClientApplication(
            CLIENT_ID, authority=entra.authority, instance_discovery=False,
            http_client=session)
        result = app.acquire_token_by_username_password(
            "svc@contoso.example", "pw", ["https://ConfigMgrService/user_impersonation"])
        claims = entra.verify(result["access_token"], "https://ConfigMgrService")

Where Entra's behaviour depends on tenant configuration, this picks the common one:

- Every client is consented to every delegated scope of every API (admin consent).
- Access tokens follow the API's ``accessTokenAcceptedVersion``. 1 (what a manifest
  that leaves it null gets; assumed for the ConfigMgr server app, unverified) gives
  ``iss=https://sts.windows.net/<tenant>/``, ``aud`` = the identifier named in the
  scope (``https://ConfigMgrService``), ``appid``, ``upn``, ``ver=1.0``. 2 gives
  ``iss`` = :attr:`EntraSimulator.issuer`, ``aud`` = the API's application ID, ``azp``,
  ``preferred_username``, ``ver=2.0``. ID tokens are always v2.0.
- An MFA user's password grant fails the way a conditional access policy makes it
  fail: ``invalid_grant`` with AADSTS50076 and ``suberror=basic_action`` (Entra does
  not say ``interaction_required`` for ROPC; the error code is what to look at).
- ``invalid_client`` answers are HTTP 401, the others 400, as Entra sends them.
- Client-credential answers carry no ``scope``, as Entra's do; MSAL then caches the
  token under the scope it asked for.

MSAL's username/password flow first asks ``https://<authority host>/common/userrealm/``
on port 443 whatever the authority's port: :class:`UserRealmResponder` answers there
(started by the simulator unless ``user_realm=False``). One process at a time can
hold 127.0.0.1:443; ``EntraSimulator(ca, host="127.x.y.z")`` gives a simulator (and
its port-443 responder) a loopback address of its own instead of ``localhost``.

The HTTPS server under every simulator lives in ``devstack.https``.

The package, in the order a token request meets it:

- ``simulator``: :class:`EntraSimulator`, its lifecycle, addresses and routes.
- ``metadata``: the discovery document and the JWKS MSAL reads first.
- ``grants``: the token endpoint's form and its three grants; ``client_auth`` checks
  secrets and certificate assertions, ``scopes`` resolves the ``scope`` parameter,
  ``refusals`` holds Entra's error answers, ``tokens`` mints what a grant gives.
- ``directory`` and ``model``: the tenant's users, clients and APIs; ``keys``: its
  signing keys and client certificates; ``user_realm``: the port-443 responder.
- ``__main__``: ``python -m devstack.entra`` serves a sample tenant.
"""

from devstack.entra.keys import generate_client_certificate
from devstack.entra.model import (
    CONFIGMGR_APP_ID_URI,
    CONFIGMGR_SCOPE,
    DEFAULT_TENANT_ID,
    ClientCertificate,
    EntraApi,
    EntraClient,
    EntraUser,
    TokenRequest,
    TokenVersion,
)
from devstack.entra.simulator import EntraSimulator
from devstack.entra.user_realm import UserRealmResponder, UserRealmUnavailable

__all__ = [
    "CONFIGMGR_APP_ID_URI",
    "CONFIGMGR_SCOPE",
    "DEFAULT_TENANT_ID",
    "ClientCertificate",
    "EntraApi",
    "EntraClient",
    "EntraSimulator",
    "EntraUser",
    "TokenRequest",
    "TokenVersion",
    "UserRealmResponder",
    "UserRealmUnavailable",
    "generate_client_certificate",
]
