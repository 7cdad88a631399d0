"""A local certificate authority for the HTTPS simulators (certificates from trustme).

Clients trust it through a PEM bundle file, exactly as an operator trusts a site's
self-signed SMS Provider certificate through TLS_CA_BUNDLE: verification stays on.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import trustme

#: Names every simulator certificate is valid for.
LOCAL_NAMES = ("localhost", "127.0.0.1")


class LocalCA:
    """One CA per stack; server contexts for the simulators, a bundle for the clients."""

    def __init__(self, directory: Path | None = None) -> None:
        self._ca = trustme.CA(organization_name="cm-remediate devstack")
        self._dir = directory or Path(tempfile.mkdtemp(prefix="cm-devstack-ca-"))
        self.bundle_path = self._dir / "devstack-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.bundle_path))

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A TLS server context with a certificate for ``names`` (default: localhost)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(*(names or LOCAL_NAMES)).configure_cert(context)
        return context

    def issue_files(self, directory: Path, *names: str) -> tuple[Path, Path]:
        """A server certificate (with its chain) and its private key as PEM files, for a
        server that reads files rather than an SSLContext (PostgreSQL)."""
        issued = self._ca.issue_cert(*(names or LOCAL_NAMES))
        directory.mkdir(parents=True, exist_ok=True)
        certificate = directory / "server.crt"
        key = directory / "server.key"
        certificate.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        key.touch(mode=0o600)  # created private: the key never sits world-readable
        issued.private_key_pem.write_to_path(str(key))
        return certificate, key

    def untrusted_server_context(self, *names: str) -> ssl.SSLContext:
        """A certificate from a different CA: a client must refuse it."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        trustme.CA().issue_cert(*(names or LOCAL_NAMES)).configure_cert(context)
        return context
