"""The site's document signer: a private key and its certificate, as PEM files.

The files live in the data dir (`signing/key.pem`, `signing/cert.pem`) unless
BATCHSITE_SIGNING_KEY and BATCHSITE_SIGNING_CERT name others; `manage.py createsigningkey`
makes or imports them. Each process reads them again only when they change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings

from jobs.base import PermanentError, TransientError


@dataclass(frozen=True)
class Signer:
    """A private key and the certificate that names it."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def subject(self) -> str:
        """Return the certificate subject as an RFC 4514 string."""
        return self.certificate.subject.rfc4514_string()

    @property
    def fingerprint(self) -> str:
        """Return the certificate's SHA-256 fingerprint in hex."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()


# (key path, mtime, inode, cert path, mtime, inode) -> Signer; one entry, per process.
_signer_cache: dict[tuple[str, int, int, str, int, int], Signer] = {}


def signer_paths() -> tuple[Path, Path]:
    """Return the paths of the signer's key and certificate PEM files."""
    signing_dir = Path(settings.BATCHSITE_DATA_DIR) / "signing"
    key = getattr(settings, "BATCHSITE_SIGNING_KEY", None) or signing_dir / "key.pem"
    cert = getattr(settings, "BATCHSITE_SIGNING_CERT", None) or signing_dir / "cert.pem"
    return Path(key), Path(cert)


def signer_check(key: Any, certificate: x509.Certificate) -> str:
    """Return why `key` and `certificate` cannot sign together, or "" if they can."""
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return f"the key is a {type(key).__name__}; PKCS#7 signing needs an RSA or EC key"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != certificate.public_key().public_bytes(serialization.Encoding.DER, public):
        return "the certificate is not for this key"
    return ""


def signer_load() -> Signer:
    """Return the configured signer, read again only when its files change."""
    key_path, cert_path = signer_paths()
    try:
        key_stat, cert_stat = key_path.stat(), cert_path.stat()
    except FileNotFoundError:
        raise PermanentError(
            f"no signing key: {key_path} or {cert_path} is missing; "
            "run `manage.py createsigningkey` to make or import one",
            code="no_signer",
        ) from None
    stamp = (
        str(key_path),
        key_stat.st_mtime_ns,
        key_stat.st_ino,
        str(cert_path),
        cert_stat.st_mtime_ns,
        cert_stat.st_ino,
    )
    signer = _signer_cache.get(stamp)
    if signer is not None:
        return signer
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise PermanentError(
            f"the signing key or certificate cannot be read: {exc}; "
            "run `manage.py createsigningkey --force` to replace them",
            code="bad_signer",
        ) from None
    problem = signer_check(key, certificate)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PermanentError(f"the signer is unusable: {problem}", code="bad_signer")
    if problem:
        # Most likely caught between createsigningkey writing the key and the certificate.
        raise TransientError(f"the signer is unusable: {problem}", code="signer_mismatch")
    signer = Signer(key=key, certificate=certificate)
    _signer_cache.clear()
    _signer_cache[stamp] = signer
    return signer
