"""``python -m devstack.entra``: serve a sample tenant until Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Final

from devstack.entra.model import CONFIGMGR_APP_ID_URI, CONFIGMGR_SCOPE
from devstack.entra.simulator import EntraSimulator
from devstack.entra.user_realm import UserRealmUnavailable
from devstack.tls import LocalCA

SAMPLE_CLIENT_ID: Final = "5d1a9c3e-7b2f-4e60-8a14-2c9f6b3d7e05"
SAMPLE_USER: Final = "svc-cmremediate@contoso.example"
SAMPLE_PASSWORD: Final = "devstack-Passw0rd!"
SAMPLE_CLIENT_SECRET: Final = "devstack-client-secret"


def main() -> None:
    """Serve a sample tenant until Ctrl-C: ``python -m devstack.entra``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ca = LocalCA()
    simulator = EntraSimulator(ca)
    try:
        simulator.start()
    except UserRealmUnavailable as error:
        print(f"note: {error}\n      running without the user realm responder")
        simulator = EntraSimulator(ca, user_realm=False)
        simulator.start()
    with simulator:
        simulator.add_api()
        simulator.add_client(SAMPLE_CLIENT_ID, public=True, secret=SAMPLE_CLIENT_SECRET)
        simulator.add_user(SAMPLE_USER, SAMPLE_PASSWORD)
        print(f"authority       {simulator.authority}")
        print(f"token endpoint  {simulator.token_endpoint}")
        print(f"device code     {simulator.device_authorization_endpoint}")
        print(f"CA bundle       {ca.bundle_path}  (clients: verify=<this>, trust_env=False)")
        print(f"client          {SAMPLE_CLIENT_ID} (public; secret {SAMPLE_CLIENT_SECRET})")
        print(f"sample user     {SAMPLE_USER} / {SAMPLE_PASSWORD}")
        print(f"scope           {CONFIGMGR_APP_ID_URI}/{CONFIGMGR_SCOPE}")
        print(
            f"settings        ENTRA_AUTHORITY_HOST={simulator.authority_host} "
            f"ENTRA_TENANT_ID={simulator.tenant_id} ENTRA_CLIENT_ID={SAMPLE_CLIENT_ID}"
        )
        print("serving until Ctrl-C")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
