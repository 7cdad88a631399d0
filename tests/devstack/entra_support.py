"""What the Entra ID simulator's device-code and refresh-token tests share besides their
fixtures (``client_id`` and ``admin`` in tests/devstack/conftest.py): the admin's
password, and an HTTP session that trusts the local CA."""

from __future__ import annotations

import requests

from devstack.tls import LocalCA

PASSWORD = "Corr3ct-Horse"


def session_for(ca: LocalCA) -> requests.Session:
    """An HTTP session that trusts ``ca`` (REQUESTS_CA_BUNDLE would override verify=)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca.bundle_path)
    return session
