"""Keys and certificates: the tenant's signing keys, client certificates, base64url."""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devstack.entra.model import ClientCertificate


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key tokens are signed with; ``kid`` is its certificate's x5t, as Entra's is."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    kid: str
    certificate_der: bytes = field(repr=False)


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE writes bytes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def int_b64url(value: int) -> str:
    """A JWK integer (``n``, ``e``): its big-endian bytes in base64url."""
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _sha1(data: bytes) -> bytes:
    """A certificate's SHA-1 thumbprint."""
    return hashlib.sha1(data, usedforsecurity=False).digest()  # x5t is SHA-1 by definition


def _self_signed(common_name: str, days: int) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA key and a self-signed certificate for it, valid from yesterday."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _new_signing_key() -> SigningKey:
    """An RSA key with a self-signed certificate, like Entra's published signing keys."""
    key, certificate = _self_signed("accounts.accesscontrol.windows.net", 5 * 365)
    der = certificate.public_bytes(serialization.Encoding.DER)
    # Entra's kid is the certificate's x5t (base64url SHA-1 thumbprint).
    return SigningKey(key, b64url(_sha1(der)), der)


class SigningKeys:
    """The tenant's published signing keys, newest first; the newest signs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys = [_new_signing_key()]

    def current(self) -> SigningKey:
        """The key that signs now."""
        with self._lock:
            return self._keys[0]

    def published(self) -> list[SigningKey]:
        """Every key a token may still be verified with."""
        with self._lock:
            return list(self._keys)

    def find(self, kid: object) -> SigningKey | None:
        """The published key with this ``kid``, or None."""
        with self._lock:
            return next((k for k in self._keys if k.kid == kid), None)

    def rotate(self) -> str:
        """Sign with a new key from now on; the old ones stay published. Returns its kid."""
        key = _new_signing_key()
        with self._lock:
            self._keys.insert(0, key)
        return key.kid


def generate_client_certificate(common_name: str = "cm-remediate") -> tuple[bytes, bytes]:
    """A self-signed client certificate: (private key PEM, certificate PEM).

    Register the certificate with ``add_client(..., certificate_pem=...)``; give MSAL
    the private key and the certificate's thumbprint or the certificate itself.
    """
    key, certificate = _self_signed(common_name, 365)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def client_certificates(pem: bytes) -> tuple[ClientCertificate, ...]:
    """What registering the public certificates in ``pem`` keeps: thumbprints and key."""
    registered: list[ClientCertificate] = []
    for certificate in x509.load_pem_x509_certificates(pem):
        der = certificate.public_bytes(serialization.Encoding.DER)
        registered.append(
            ClientCertificate(
                sha1_thumbprint=_sha1(der).hex().upper(),
                sha256_thumbprint=hashlib.sha256(der).hexdigest().upper(),
                public_key=certificate.public_key(),
            )
        )
    return tuple(registered)
