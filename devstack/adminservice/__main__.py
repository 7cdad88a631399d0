"""``python -m devstack.adminservice``: serve the simulator with the M365 demo devices."""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Final

from devstack.adminservice.auth import DEFAULT_AUDIENCE
from devstack.adminservice.simulator import AdminServiceSimulator
from devstack.adminservice.tokens import JwksServer, TokenSigner
from devstack.datagen import M365_RULES, m365_demo_scenario
from devstack.tls import LocalCA

_DEMO_TENANT: Final = "8d5c7a5e-0000-4000-8000-00000000c0de"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the simulator with the M365 demo devices until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.adminservice", description=main.__doc__
    )
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    parser.add_argument("--admin", default="cm-svc@contoso.com", help="administrative user's UPN")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    ca = LocalCA()
    signer = TokenSigner()
    issuer = f"https://sts.windows.net/{_DEMO_TENANT}/"
    collections = {rule["collection_id"]: rule["name"] for rule in M365_RULES}
    with (
        JwksServer(ca, [signer]) as jwks,
        AdminServiceSimulator(
            ca,
            jwks_uri=jwks.url,
            issuer=issuer,
            admins=[args.admin],
            devices=m365_demo_scenario().devices,
            collections=collections,
            port=args.port,
        ) as simulator,
    ):
        token = signer.token(issuer=issuer, upn=args.admin, lifetime=8 * 3600)
        print(f"AdminService (on premises): {simulator.base_url}")
        print(f"AdminService (token auth):  {simulator.token_auth_url}")
        print(f"AdminService (through CMG): {simulator.cmg_url}")
        print(f"JWKS:      {jwks.url}")
        print(f"Issuer:    {issuer}")
        print(f"Audience:  {DEFAULT_AUDIENCE}")
        print(f"CA bundle: {ca.bundle_path}")
        print(f"Token for {args.admin} (8 hours):\n{token}")
        print(
            f"Try: curl --cacert {ca.bundle_path} -H 'Authorization: Bearer <token>' "
            f"'{simulator.cmg_url}v1.0/$metadata'"
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
