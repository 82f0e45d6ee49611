"""Tests for `manage.py createsigningkey`: make, import and replace the document signer."""

from __future__ import annotations

import datetime
import io
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.management import CommandError, call_command

from jobs.management.commands.createsigningkey import certificate_self_signed
from jobs.signer import signer_paths


@pytest.fixture(autouse=True)
def paths(settings, tmp_path) -> tuple[Path, Path]:
    """Point the signer at files under tmp_path; return (key, cert) paths."""
    settings.BATCHSITE_SIGNING_KEY = tmp_path / "signing" / "key.pem"
    settings.BATCHSITE_SIGNING_CERT = tmp_path / "signing" / "cert.pem"
    return settings.BATCHSITE_SIGNING_KEY, settings.BATCHSITE_SIGNING_CERT


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("createsigningkey", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def stored(paths) -> tuple:
    key_path, cert_path = paths
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return key, x509.load_pem_x509_certificate(cert_path.read_bytes())


def public_der(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def write_pem_pair(folder: Path, key, *, password: bytes | None = None) -> tuple[Path, Path]:
    """Write `key` and a certificate for it as PEM files to import; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    certificate = certificate_self_signed(key=key, common_name="Imported", days=30)
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_file, cert_file = folder / "in-key.pem", folder / "in-cert.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def test_createsigningkey__makes_an_ec_key_and_self_signed_certificate(paths):
    output = run("--common-name", "Acme Signing", "--days", "30")

    key, certificate = stored(paths)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert public_der(key) == certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert certificate.subject.rfc4514_string() == "CN=Acme Signing"
    assert certificate.issuer == certificate.subject
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime.days == 30  # 30 days and the 5 minutes of slack before now
    assert "subject: CN=Acme Signing" in output
    assert f"SHA-256 fingerprint: {fingerprint(certificate)}" in output


def test_createsigningkey__key_file_is_private(paths):
    run()

    key_path, cert_path = paths
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert b"ENCRYPTED" not in key_path.read_bytes()
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["cert.pem", "key.pem"]


def test_createsigningkey__makes_an_rsa_key_when_asked(paths):
    run("--key-type", "rsa")

    key, _ = stored(paths)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


def test_createsigningkey__defaults_to_the_data_dir(settings, tmp_path):
    del settings.BATCHSITE_SIGNING_KEY
    del settings.BATCHSITE_SIGNING_CERT
    settings.BATCHSITE_DATA_DIR = tmp_path / "data"

    run()

    assert signer_paths() == (
        tmp_path / "data" / "signing" / "key.pem",
        tmp_path / "data" / "signing" / "cert.pem",
    )
    assert all(path.is_file() for path in signer_paths())


def test_createsigningkey__refuses_to_replace_without_force(paths):
    run()
    before = [path.read_bytes() for path in paths]

    with pytest.raises(CommandError, match="--force"):
        run()

    assert [path.read_bytes() for path in paths] == before


def test_createsigningkey__refuses_when_only_the_certificate_exists(paths):
    _, cert_path = paths
    cert_path.parent.mkdir(parents=True)
    cert_path.write_text("an old certificate")

    with pytest.raises(CommandError, match="--force"):
        run()

    assert cert_path.read_text() == "an old certificate"


def test_createsigningkey__force_replaces_the_signer(paths):
    run()
    _, old = stored(paths)

    output = run("--force", "--common-name", "Next")

    _, new = stored(paths)
    assert new.subject.rfc4514_string() == "CN=Next"
    assert fingerprint(new) != fingerprint(old)
    assert fingerprint(new) in output


def test_createsigningkey__imports_a_pem_pair(paths, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file, cert_file = write_pem_pair(tmp_path, key)

    output = run("--import-pem", str(key_file), str(cert_file))

    stored_key, certificate = stored(paths)
    assert public_der(stored_key) == public_der(key)
    assert certificate.public_bytes(serialization.Encoding.PEM) == cert_file.read_bytes()
    assert "subject: CN=Imported" in output
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o600


def test_createsigningkey__imports_an_encrypted_pem_key_with_its_password(paths, tmp_path):
    key = ec.generate_private_key(ec.SECP384R1())
    key_file, cert_file = write_pem_pair(tmp_path, key, password=b"s3cret")

    with pytest.raises(CommandError):
        run("--import-pem", str(key_file), str(cert_file))
    assert not paths[0].exists()
    run("--import-pem", str(key_file), str(cert_file), "--password", "s3cret")

    stored_key, _ = stored(paths)  # stored unencrypted, readable without a password
    assert public_der(stored_key) == public_der(key)


def test_createsigningkey__refuses_a_key_that_does_not_match_the_certificate(paths, tmp_path):
    _, cert_file = write_pem_pair(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    other_key_file, _ = write_pem_pair(tmp_path / "other", ec.generate_private_key(ec.SECP256R1()))

    with pytest.raises(CommandError, match="not for this key"):
        run("--import-pem", str(other_key_file), str(cert_file))

    assert not any(path.exists() for path in paths)


def test_createsigningkey__refuses_a_key_pkcs7_cannot_sign_with(paths, tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    key_file = tmp_path / "ed.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ed")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    cert_file = tmp_path / "ed-cert.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    with pytest.raises(CommandError, match="RSA or EC"):
        run("--import-pem", str(key_file), str(cert_file))

    assert not any(path.exists() for path in paths)


def test_createsigningkey__imports_a_pkcs12_file(paths, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = certificate_self_signed(key=key, common_name="From P12", days=10)
    p12 = tmp_path / "signer.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"signer", key, certificate, None, serialization.BestAvailableEncryption(b"pw")
        )
    )

    output = run("--import-p12", str(p12), "--password", "pw")

    stored_key, stored_certificate = stored(paths)
    assert public_der(stored_key) == public_der(key)
    assert stored_certificate == certificate
    assert f"SHA-256 fingerprint: {fingerprint(certificate)}" in output


def test_createsigningkey__pkcs12_with_a_wrong_password_is_refused(paths, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = certificate_self_signed(key=key, common_name="x", days=10)
    p12 = tmp_path / "signer.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"x", key, certificate, None, serialization.BestAvailableEncryption(b"right")
        )
    )

    with pytest.raises(CommandError, match="password"):
        run("--import-p12", str(p12), "--password", "wrong")

    assert not any(path.exists() for path in paths)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--days", "0"], "--days", id="days-zero"),
        pytest.param(["--password", "x"], "--password", id="password-without-import"),
        pytest.param(
            ["--import-p12", "x.p12", "--common-name", "x"], "--common-name", id="cn-with-import"
        ),
        pytest.param(["--import-p12", "/no/such/file.p12"], "cannot read", id="missing-file"),
    ],
)
def test_createsigningkey__bad_arguments_are_refused(paths, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)

    assert not any(path.exists() for path in paths)
