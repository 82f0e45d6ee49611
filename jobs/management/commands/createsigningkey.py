"""Make or import the signer that `document.sign` signs with."""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.signer import signer_check, signer_paths

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
DEFAULT_COMMON_NAME = "batchsite document signer"
DEFAULT_DAYS = 1095
MAX_DAYS = 36500


def certificate_self_signed(*, key: SigningKey, common_name: str, days: int) -> x509.Certificate:
    """Return a self-signed certificate for `key`, fit for signing documents (S/MIME)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A little slack for verifiers whose clocks run behind ours.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # emailProtection is the purpose `openssl cms -verify` checks against a trust store.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def file_replace(path: Path, data: bytes, *, mode: int) -> None:
    """Write `data` to `path` through a temporary file, so readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        # mkstemp makes the file 0600, so a key is never readable by others, not even briefly.
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def key_description(key: PrivateKeyTypes) -> str:
    """Describe a private key briefly, e.g. `EC secp256r1` or `RSA 2048`."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    # Not reached from handle(), which refuses any other kind of key first.
    return type(key).__name__


class Command(BaseCommand):
    help = (
        "Make the key and self-signed certificate `document.sign` signs with (EC P-256 by "
        "default), or import a PEM key and certificate or a PKCS#12 file. The files go to "
        "BATCHSITE_SIGNING_KEY and BATCHSITE_SIGNING_CERT (default: <data dir>/signing/"
        "key.pem and cert.pem); the key is written unencrypted with mode 0600. Prints the "
        "certificate's subject and SHA-256 fingerprint."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--common-name", help=f"subject CN (default {DEFAULT_COMMON_NAME!r})")
        parser.add_argument(
            "--days", type=int, help=f"validity of a new certificate (default {DEFAULT_DAYS})"
        )
        parser.add_argument(
            "--key-type", choices=["ec", "rsa"], help="ec (P-256, default) or rsa (2048 bits)"
        )
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--import-pem",
            nargs=2,
            metavar=("KEY", "CERT"),
            help="import a PEM private key and its PEM certificate",
        )
        source.add_argument("--import-p12", metavar="FILE", help="import a PKCS#12 (.p12) file")
        parser.add_argument("--password", help="password of the imported key or PKCS#12 file")
        parser.add_argument(
            "--force", action="store_true", help="replace an existing key and certificate"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        key_path, cert_path = signer_paths()
        existing = [str(path) for path in (key_path, cert_path) if path.exists()]
        if existing and not options["force"]:
            raise CommandError(
                f"{' and '.join(existing)} already exist; pass --force to replace the signer "
                "(signatures made with the old key stay verifiable: they carry its certificate)"
            )
        importing = options["import_pem"] or options["import_p12"]
        key: PrivateKeyTypes
        if importing:
            given = [
                f"--{name.replace('_', '-')}"
                for name in ("common_name", "days", "key_type")
                if options[name] is not None
            ]
            if given:
                raise CommandError(f"{', '.join(given)} apply only when making a new key")
            key, certificate = self._imported(options)
        else:
            if options["password"] is not None:
                raise CommandError("--password applies only with --import-pem or --import-p12")
            key, certificate = self._generated(options)
        problem = signer_check(key, certificate)
        if problem:
            raise CommandError(f"cannot sign with this pair: {problem}")
        if certificate.not_valid_after_utc < datetime.datetime.now(datetime.UTC):
            self.stderr.write(
                f"warning: the certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
            )
        file_replace(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            mode=0o600,
        )
        file_replace(cert_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
        self.stdout.write(f"wrote {key_description(key)} key to {key_path}")
        self.stdout.write(f"wrote certificate to {cert_path}")
        self.stdout.write(f"valid until: {certificate.not_valid_after_utc.isoformat()}")
        self.stdout.write(f"subject: {certificate.subject.rfc4514_string()}")
        self.stdout.write(f"SHA-256 fingerprint: {fingerprint}")

    def _generated(self, options: dict[str, Any]) -> tuple[SigningKey, x509.Certificate]:
        days = DEFAULT_DAYS if options["days"] is None else options["days"]
        if not 1 <= days <= MAX_DAYS:
            raise CommandError(f"--days must be from 1 to {MAX_DAYS}")
        common_name = options["common_name"] or DEFAULT_COMMON_NAME
        key: SigningKey
        if options["key_type"] == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        try:
            certificate = certificate_self_signed(key=key, common_name=common_name, days=days)
        except ValueError as exc:
            raise CommandError(f"cannot make the certificate: {exc}") from exc
        return key, certificate

    def _imported(self, options: dict[str, Any]) -> tuple[PrivateKeyTypes, x509.Certificate]:
        password = options["password"].encode() if options["password"] is not None else None
        if options["import_p12"]:
            data = self._read(options["import_p12"])
            try:
                key, certificate, _ = pkcs12.load_key_and_certificates(data, password)
            except (ValueError, TypeError) as exc:
                raise CommandError(
                    f"cannot read {options['import_p12']} (wrong --password?): {exc}"
                ) from exc
            if key is None or certificate is None:
                raise CommandError(f"{options['import_p12']} must hold a key and its certificate")
            return key, certificate
        key_file, cert_file = options["import_pem"]
        try:
            key = serialization.load_pem_private_key(self._read(key_file), password=password)
        except TypeError as exc:
            raise CommandError(f"cannot read the key in {key_file}: {exc}") from exc
        except ValueError as exc:
            raise CommandError(
                f"{key_file} holds no PEM private key this can read (wrong --password?): {exc}"
            ) from exc
        try:
            certificates = x509.load_pem_x509_certificates(self._read(cert_file))
        except ValueError as exc:
            raise CommandError(f"{cert_file} holds no PEM certificate: {exc}") from exc
        # The first certificate of a chain file is the signer's own.
        return key, certificates[0]

    @staticmethod
    def _read(name: str) -> bytes:
        try:
            return Path(name).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {name}: {exc.strerror}") from exc
