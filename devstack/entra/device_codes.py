"""The device authorization grant: the ``/devicecode`` endpoint, the codes it hands out,
the user who signs in with one (a test plays them), and the polling answers.

Facts, from Microsoft Learn "Microsoft identity platform and the OAuth 2.0 device
authorization grant flow" (v2-oauth2-device-code) unless said otherwise:

- ``POST /{tenant}/oauth2/v2.0/devicecode`` with ``client_id`` and ``scope`` answers
  ``device_code``, ``user_code``, ``verification_uri``, ``expires_in`` (900 by default:
  "the user has 15 minutes to sign in"), ``interval`` and ``message``; never
  ``verification_uri_complete``. The user code is 9 characters of capitals and digits
  (``BPPVYQZMA`` in Azure/azure-sdk-for-python#32375, ``C28M3LMWE`` in an MSAL.NET log);
  the page is ``https://microsoft.com/devicelogin``.
- MSAL.NET reads the devicecode answer with ``expectErrorsOn200OK`` ("Normally AAD
  responds with an error HTTP code, but /devicecode endpoint sends errors on 200OK",
  MSAL.NET PR #1466): errors go out with HTTP 200 here. MSAL Python reads the body
  whatever the status.
- Polling, ``grant_type=urn:ietf:params:oauth:grant-type:device_code`` with
  ``device_code`` and ``client_id``: ``authorization_pending`` (AADSTS70016) until the
  user signs in, ``authorization_declined``, ``bad_verification_code``, ``expired_token``.
  Entra does not document ``slow_down``: it is sent only when ``device_code_slow_down``
  is on, without an AADSTS code. (What Entra does to a client polling too often is
  AADSTS50196 LoopDetected, microsoft-authentication-library-for-dotnet#1495; not
  simulated.)
- An expired code is answered ``expired_token`` with AADSTS70020 "The provided value
  for the input parameter 'device_code' is not valid. This device code has expired."
  (Azure/azure-cli#22251 and many more). The error code list names AADSTS70019
  CodeExpired "Verification code expired" too; the token endpoint is seen sending 70020.
- A client without "Allow public client flows" gets a code, then AADSTS7000218 when it
  redeems it (an MSAL.NET user's log, 2021): the token endpoint's client check does that.

Unverified, chosen here: ``bad_verification_code`` carries AADSTS70018 (the code list's
BadVerificationCode); ``authorization_declined`` carries AADSTS65004 (UserDeclinedConsent);
a redeemed code, or one redeemed by another client, is ``invalid_grant`` AADSTS70000.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Final

from devstack.entra.client_auth import requested_client
from devstack.entra.directory import Directory
from devstack.entra.model import PendingDeviceCode, SignIn
from devstack.entra.refusals import Refusal, missing
from devstack.entra.scopes import resolve_scope

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
VERIFICATION_URI: Final = "https://microsoft.com/devicelogin"
#: The HTTP status of a devicecode error answer (see the module docstring).
DEVICECODE_ERROR_STATUS: Final = 200
_USER_CODE_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789"
_USER_CODE_LENGTH: Final = 9


@dataclass(slots=True)
class _DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    issued_at: float
    expires_at: float
    interval: int
    state: str = "pending"
    sign_in: SignIn | None = None
    last_poll_at: float | None = None

    def view(self) -> PendingDeviceCode:
        return PendingDeviceCode(
            self.user_code, self.client_id, self.scope, self.issued_at, self.expires_at, self.state
        )


class DeviceCodes:
    """The device codes handed out, and what became of them.

    The policies (lifetime, interval, ``slow_down``) and the clock are the directory's,
    read when a code is handed out or polled.
    """

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._changed = threading.Condition()
        self._codes: dict[str, _DeviceCode] = {}

    # -- the devicecode endpoint -----------------------------------------------------

    def authorize(self, form: dict[str, str]) -> dict[str, object]:
        """The device authorization answer to a ``/devicecode`` form, or its refusal."""
        client = requested_client(self._directory, form)
        scope = form.get("scope")
        if not scope:
            raise missing("scope")
        resolve_scope(self._directory, scope, app_only=False)  # refuses what Entra refuses
        lifetime = int(self._directory.device_code_lifetime_seconds)
        interval = int(self._directory.device_code_interval_seconds)
        now = self._directory.now()
        with self._changed:
            user_code = self._new_user_code()
            code = _DeviceCode(
                device_code=f"DAQABIQEAAAD--DLA3VO7QrddgJg7Wevr{secrets.token_urlsafe(160)}",
                user_code=user_code,
                client_id=client.client_id,
                scope=scope,
                issued_at=now,
                expires_at=now + lifetime,
                interval=interval,
            )
            self._codes[code.device_code] = code
            self._changed.notify_all()
        return {
            "user_code": user_code,
            "device_code": code.device_code,
            "verification_uri": VERIFICATION_URI,
            "expires_in": lifetime,
            "interval": interval,
            "message": f"To sign in, use a web browser to open the page {VERIFICATION_URI} "
            f"and enter the code {user_code} to authenticate.",
        }

    def _new_user_code(self) -> str:
        live = {c.user_code for c in self._codes.values()}
        while True:
            candidate = "".join(
                secrets.choice(_USER_CODE_ALPHABET) for _ in range(_USER_CODE_LENGTH)
            )
            if candidate not in live:
                return candidate

    # -- the token endpoint's device_code grant --------------------------------------

    def redeem(self, client_id: str, device_code: str) -> tuple[SignIn, str]:
        """The sign-in and scope a polled device code stands for, once; else the refusal
        polling gets now (pending, slow down, declined, expired, unknown)."""
        now = self._directory.now()
        with self._changed:
            code = self._codes.get(device_code)
            if code is None:
                raise Refusal(
                    "bad_verification_code",
                    70018,
                    "The provided value for the input parameter 'device_code' is not valid.",
                )
            if code.client_id != client_id.lower() or code.state == "redeemed":
                raise Refusal("invalid_grant", 70000, "Provided grant is invalid or malformed.")
            previous_poll, code.last_poll_at = code.last_poll_at, now
            if now >= code.expires_at:
                raise Refusal(
                    "expired_token",
                    70020,
                    "The provided value for the input parameter 'device_code' is not valid. "
                    "This device code has expired.",
                )
            if code.state == "declined":
                raise Refusal(
                    "authorization_declined", 65004, "The user declined the authorization request."
                )
            if code.state == "pending":
                if (
                    self._directory.device_code_slow_down
                    and previous_poll is not None
                    and now - previous_poll < code.interval
                ):
                    code.interval += 5  # RFC 8628 3.5: every later poll waits 5 s more
                    raise Refusal("slow_down", None, "The client is polling too quickly.")
                raise Refusal(
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                )
            assert code.sign_in is not None
            code.state = "redeemed"
            self._changed.notify_all()
            return code.sign_in, code.scope

    # -- the user at https://microsoft.com/devicelogin (a test) -------------------------

    def approve(self, user_code: str, upn: str, *, mfa: bool) -> PendingDeviceCode:
        """Sign in as ``upn`` with the user code, with or without MFA."""
        user = self._directory.find_user(upn)
        if user is None:
            raise ValueError(f"no user {upn!r} in the tenant")
        if not user.enabled:
            raise ValueError(f"{upn} is disabled (AADSTS50057): the sign-in page refuses them")
        if user.mfa_required and not mfa:
            raise ValueError(f"{upn} must complete MFA: conditional access demands it")
        amr = ("pwd", "mfa") if mfa else ("pwd",)
        with self._changed:
            code = self._pending(user_code)
            code.state = "approved"
            code.sign_in = SignIn(user.upn, self._directory.now(), amr)
            self._changed.notify_all()
            return code.view()

    def decline(self, user_code: str) -> PendingDeviceCode:
        """Answer "No" to "Are you trying to sign in to ...?" for the user code."""
        with self._changed:
            code = self._pending(user_code)
            code.state = "declined"
            self._changed.notify_all()
            return code.view()

    def _pending(self, user_code: str) -> _DeviceCode:
        wanted = user_code.strip().upper()
        now = self._directory.now()
        for code in self._codes.values():
            if code.user_code == wanted and code.state == "pending" and now < code.expires_at:
                return code
        raise ValueError(f"no pending device code has user code {user_code!r}")

    def codes(self) -> list[PendingDeviceCode]:
        """Every device code handed out, oldest first."""
        with self._changed:
            return [code.view() for code in self._codes.values()]

    def wait_for_pending(self, timeout: float) -> PendingDeviceCode:
        """The newest pending, unexpired device code, once there is one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = self._directory.now()
                live = [
                    c for c in self._codes.values() if c.state == "pending" and now < c.expires_at
                ]
                if live:
                    return live[-1].view()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no device code was requested within {timeout} s")
                self._changed.wait(min(left, 0.1))
