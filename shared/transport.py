"""HTTPS for every outbound call: verified TLS, explicit timeouts, our own trust store.

TLS verification cannot be switched off. TLS_CA_BUNDLE *adds* CA certificates (a
site's self-signed SMS Provider certificate, a private CA) to the system store.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import certifi
import requests

from shared.errors import ConfigurationError

#: (connect, read) seconds for every HTTP call.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)

_SYSTEM_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian/Ubuntu, Azure's Linux images
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # RHEL family
)


def _system_bundle() -> Path:
    for path in _SYSTEM_BUNDLES:
        if path.is_file():
            return path
    return Path(certifi.where())


def trust_store(extra_ca_bundle: Path | None) -> Path:
    """A PEM file of the system CAs plus ``extra_ca_bundle`` (requests replaces, not adds)."""
    system = _system_bundle()
    if extra_ca_bundle is None:
        return system
    try:
        extra = extra_ca_bundle.read_text(encoding="ascii")
        ssl.create_default_context(cadata=extra)  # refuse a file that holds no certificate
    except (OSError, UnicodeDecodeError, ssl.SSLError, ValueError) as error:
        raise ConfigurationError(
            f"TLS_CA_BUNDLE: {extra_ca_bundle} is not a readable PEM file of CA certificates "
            f"({error})"
        ) from None
    combined = Path(tempfile.mkdtemp(prefix="cm-remediate-tls-")) / "ca-bundle.pem"
    combined.write_text(system.read_text(encoding="ascii") + "\n" + extra, encoding="ascii")
    return combined


def new_session(verify: Path) -> requests.Session:
    """A session that verifies against ``verify`` and ignores proxy/CA environment
    variables (REQUESTS_CA_BUNDLE would silently replace our trust store)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(verify)
    session.headers["User-Agent"] = "cm-remediate"
    return session
