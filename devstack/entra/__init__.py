"""Entra ID's v2.0 token endpoint over HTTPS, faithful enough for MSAL to talk to.

Entra ID cannot run here, so this serves what MSAL 1.39 really asks of it, with the
shapes Entra answers with: the OpenID discovery document, the signing keys, the token
endpoint (``password``, ``client_credentials``, ``refresh_token``, ``device_code``), the
device authorization (``/devicecode``) endpoint and AADSTS errors. Typical use::

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

The device code flow, with a test as the admin who signs in::

    flow = app.initiate_device_flow(scopes=[SCOPE])  # MSAL, or the CLI under test
    code = entra.wait_for_device_code()          # or entra.pending_device_codes()
    entra.approve_device_code(code.user_code, "admin@contoso.example", mfa=True)
    result = app.acquire_token_by_device_flow(flow)  # v1 amr: ["pwd", "mfa"]

(``decline_device_code`` declines; ``advance_clock(900)`` expires the code.)

Refresh tokens are strict: every redemption answers a new one and the old one stays
valid (Entra's documented behaviour; ``rotation_invalidates_old=True`` if wanted); one
unused for ``refresh_token_max_inactive_seconds`` (90 days) fails with AADSTS700082;
``revoke_sessions(upn)`` (Revoke-MgUserSignInSession) and a password change make older
ones fail with AADSTS50173; ``disable_user(upn)`` with AADSTS50057;
``set_sign_in_frequency(upn, seconds)`` with AADSTS70043 once the sign-in behind the
token is older. Those lifetimes follow the simulator's clock (``clock=``,
``advance_clock``), not the wall; the JWTs keep wall-clock times.

The HTTPS server under every simulator lives in ``devstack.https``.

The package, in the order a token request meets it:

- ``simulator``: :class:`EntraSimulator`, its lifecycle, addresses and routes.
- ``metadata``: the discovery document and the JWKS MSAL reads first.
- ``device_codes``: the ``/devicecode`` endpoint, the codes it hands out, the
  user's answer to them (a test's) and what polling gets (with the Entra facts).
- ``grants``: the token endpoint's form and its four grants; ``client_auth`` checks
  secrets and certificate assertions, ``scopes`` resolves the ``scope`` parameter,
  ``sessions`` decides whether a refresh token or account may still get tokens,
  ``refusals`` holds Entra's error answers, ``tokens`` mints what a grant gives.
- ``directory`` and ``model``: the tenant's users, clients and APIs, its token
  policies and its clock; ``keys``: its signing keys and client certificates;
  ``user_realm``: the port-443 responder.
- ``__main__``: ``python -m devstack.entra`` serves a sample tenant.
"""

from devstack.entra.device_codes import DEVICE_CODE_GRANT, VERIFICATION_URI
from devstack.entra.keys import generate_client_certificate
from devstack.entra.model import (
    CONFIGMGR_APP_ID_URI,
    CONFIGMGR_SCOPE,
    DEFAULT_TENANT_ID,
    ClientCertificate,
    EntraApi,
    EntraClient,
    EntraUser,
    PendingDeviceCode,
    SignIn,
    TokenRequest,
    TokenVersion,
)
from devstack.entra.simulator import EntraSimulator
from devstack.entra.user_realm import UserRealmResponder, UserRealmUnavailable

__all__ = [
    "CONFIGMGR_APP_ID_URI",
    "CONFIGMGR_SCOPE",
    "DEFAULT_TENANT_ID",
    "DEVICE_CODE_GRANT",
    "VERIFICATION_URI",
    "ClientCertificate",
    "EntraApi",
    "EntraClient",
    "EntraSimulator",
    "EntraUser",
    "PendingDeviceCode",
    "SignIn",
    "TokenRequest",
    "TokenVersion",
    "UserRealmResponder",
    "UserRealmUnavailable",
    "generate_client_certificate",
]
