"""The `document.sign` and `document.verify` job types: detached CMS (PKCS#7) signatures.

`document.sign` signs each document with the site's signer (a private key and its
certificate, PEM files in the data dir made or imported by `manage.py createsigningkey`)
using cryptography's PKCS7SignatureBuilder: SHA-256, a detached signature, binary mode
(no MIME canonicalisation, so any bytes sign as they are), DER. The output is the
document's own copy plus `NAME.EXT.p7s`, which `openssl cms -verify -binary -inform DER
-content NAME.EXT -in NAME.EXT.p7s -noverify` accepts.

`document.verify` checks a detached signature over a document. cryptography builds
PKCS#7 signatures but has no public API to verify them, and parsing the SignedData
ourselves would mean a new dependency (asn1crypto) or hand-written ASN.1 and signature
checks. So verification is delegated to the `openssl cms -verify` CLI (OpenSSL is what
cryptography itself is built on), run with argument lists, never a shell, on files in a
private temporary folder. `-noverify` checks the signature against the certificate its
SignerInfo names (matched by issuer and serial number or subject key identifier among the
certificates the signature carries) but not that certificate's chain. The result names
that certificate, the one OpenSSL wrote with `-signer` after checking the signature with
it, never merely the first certificate of the bundle (which may be anyone's). A signature
that does not match is a result (`valid: false` with a `code` and OpenSSL's reason), not
a failed item; it still names the certificate its SignerInfo claims, found the same way
with `-nosigs`. A SignerInfo that matches none of the carried certificates is not valid:
`signer_not_found`, with no signer.

Where the operator names trust anchors (`BATCHSITE_SIGNING_TRUST`, a PEM bundle), a valid
signature is checked again without `-noverify`, against `-CAfile` that bundle alone (not
OpenSSL's default CA path or store; OpenSSL's S/MIME signing purpose; the carried
certificates as intermediates), and the result adds
`trusted` and the `trust_anchor` the chain ends at (found with cryptography, among the
anchors, by walking issuers from the signer), or `trust_reason` when it is not trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from django.conf import settings
from django.utils import timezone

from jobs.base import JobContext, JobType, PayloadError, PermanentError, TransientError

SIGNATURE_SUFFIX = ".p7s"
COPY_BLOCK = 256 * 1024
DEFAULT_OPENSSL_TIMEOUT = 120
# A ZIP pair holds one document and one signature; refuse anything that unpacks bigger.
DEFAULT_PAIR_MAX_BYTES = 1024**3
MAX_REASON = 500

# --- the signer ----------------------------------------------------------------------------------


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


# --- openssl -------------------------------------------------------------------------------------

_OPENSSL_ERROR = re.compile(r"^[0-9A-F]+:error:[0-9A-F]+:[^:]*:([^:]*):([^:]*):")


def openssl_reason(output: str) -> str:
    """Condense OpenSSL's error output to one line: its message and each error's reason."""
    parts = []
    for line in output.splitlines():
        line = line.strip()
        if not line:
            continue
        match = _OPENSSL_ERROR.match(line)
        parts.append(f"{match[1]}: {match[2]}" if match else line)
    reason = "; ".join(parts) or "openssl refused the signature"
    return reason[:MAX_REASON]


def openssl_binary() -> str:
    """Return the name or path of the openssl program document.verify runs."""
    return getattr(settings, "BATCHSITE_OPENSSL", None) or "openssl"


@dataclass(frozen=True)
class Verification:
    """What `openssl cms -verify` said of a signature."""

    valid: bool
    reason: str = ""
    # "" when valid; "signer_not_found" or "invalid_signature" when not.
    code: str = ""
    # The certificate the SignerInfo names: the one that verified, when valid.
    signer: x509.Certificate | None = None


def _openssl_cms_verify_run(
    document: Path, signature: Path, *options: str
) -> subprocess.CompletedProcess[bytes]:
    """Run `openssl cms -verify` on a detached DER signature with extra options."""
    binary = openssl_binary()
    found = shutil.which(binary)
    if found is None:
        raise PermanentError(
            f"the openssl program ({binary}) is not installed; document.verify needs it",
            code="no_openssl",
        )
    command = [
        found, "cms", "-verify", "-binary", "-inform", "DER",
        "-content", str(document), "-in", str(signature), "-out", os.devnull, *options,
    ]  # fmt: skip
    try:
        return subprocess.run(
            command,
            capture_output=True,
            timeout=getattr(settings, "BATCHSITE_OPENSSL_TIMEOUT", DEFAULT_OPENSSL_TIMEOUT),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TransientError("openssl took too long to verify", code="verify_timeout") from None


def _signer_written(path: Path) -> x509.Certificate | None:
    """Return the (first) certificate OpenSSL's `-signer` wrote to `path`, if any."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    return certificates[0] if certificates else None


def openssl_cms_verify(document: Path, signature: Path) -> Verification:
    """Check the detached DER signature over the document; say who signed it.

    The signer is the certificate OpenSSL matched to the SignerInfo and checked the
    signature with (`-signer`), written next to the signature in its private folder.
    """
    signer_file = signature.with_name(signature.name + ".signer.pem")
    done = _openssl_cms_verify_run(document, signature, "-noverify", "-signer", str(signer_file))
    if done.returncode == 0:
        signer = _signer_written(signer_file)
        if signer is None:  # OpenSSL said yes but named nobody: do not trust the yes.
            return Verification(False, "openssl named no signer", "signer_not_found")
        return Verification(True, signer=signer)
    output = done.stderr.decode(errors="replace")
    reason = openssl_reason(output)
    if ":signer certificate not found:" in output:
        return Verification(
            False,
            "no certificate in the signature matches its signer: " + reason,
            "signer_not_found",
        )
    # Which certificate the SignerInfo claims, without checking the signature (-nosigs).
    claimed = _openssl_cms_verify_run(
        document, signature, "-noverify", "-nosigs", "-signer", str(signer_file)
    )
    signer = _signer_written(signer_file) if claimed.returncode == 0 else None
    return Verification(False, reason, "invalid_signature", signer)


# --- trust anchors -------------------------------------------------------------------------------


def trust_path() -> Path | None:
    """Return the path of the operator's trust anchors (a PEM bundle), if configured."""
    path = getattr(settings, "BATCHSITE_SIGNING_TRUST", None)
    return Path(path) if path else None


def trust_anchors(path: Path) -> list[x509.Certificate]:
    """Return the certificates in the trust bundle, refusing an unreadable or empty one."""
    try:
        anchors = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        anchors = []
    if not anchors:
        raise PermanentError(
            "the trust anchors in BATCHSITE_SIGNING_TRUST cannot be read (a PEM bundle of "
            "certificates is needed)",
            code="bad_trust",
        )
    return anchors


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def trust_anchor_of(
    signer: x509.Certificate,
    carried: list[x509.Certificate],
    anchors: list[x509.Certificate],
) -> x509.Certificate | None:
    """Return the anchor a chain from `signer` ends at: issuers among anchors, then carried."""
    chain, current = [signer], signer
    candidates = [*anchors, *carried]
    while not (current in anchors and _issued_by(current, current)):
        issuer = next((c for c in candidates if c not in chain and _issued_by(current, c)), None)
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return current if current in anchors else None


def openssl_cms_trust(document: Path, signature: Path, anchors: Path) -> tuple[bool, str]:
    """Check the signer's chain up to the trust anchors; return (trusted, OpenSSL's reason)."""
    # Only the operator's anchors: not OpenSSL's default certificate directory or store.
    done = _openssl_cms_verify_run(
        document, signature, "-CAfile", str(anchors), "-no-CApath", "-no-CAstore"
    )
    if done.returncode == 0:
        return True, ""
    return False, openssl_reason(done.stderr.decode(errors="replace"))


def _copy(source: IO[bytes], target: Path, *, limit: int | None = None) -> str:
    """Copy a stream to a file and return its SHA-256; refuse more than `limit` bytes."""
    digest = hashlib.sha256()
    copied = 0
    with open(target, "wb") as out:
        while block := source.read(COPY_BLOCK):
            copied += len(block)
            if limit is not None and copied > limit:
                raise PermanentError(
                    f"the upload unpacks to more than {limit} bytes", code="too_large"
                )
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


# --- the job types -------------------------------------------------------------------------------


class DocumentSign(JobType):
    """Sign a document with the site's key: a detached DER CMS signature beside the original."""

    name = "document.sign"
    description = (
        "Signs the item's file with the site's signer: writes NAME.EXT.p7s, a detached DER "
        "CMS/PKCS#7 signature (SHA-256), and a copy of NAME.EXT, so the batch package holds "
        "both. Verify with `openssl cms -verify -binary -inform DER -content NAME.EXT "
        "-in NAME.EXT.p7s`. Takes no payload fields."
    )
    payload_schema = {"type": "object", "properties": {}, "additionalProperties": False}
    accepts_file = True
    chunk_size = 200
    slice_size = 20

    def validate_payload(self, payload: Any) -> None:
        """Accept only an empty object: signing has no options."""
        super().validate_payload(payload)
        if payload:
            raise PayloadError(
                {f"payload.{name}": "is not a field of document.sign" for name in sorted(payload)}
            )

    def readiness(self) -> str | None:
        """Say what to run when there is no usable signer."""
        try:
            signer_load()
        except TransientError:
            # Caught between createsigningkey's two writes; the items retry, so accept them.
            return None
        except PermanentError as exc:
            if exc.code == "no_signer":
                return (
                    "there is no signing key; run `manage.py createsigningkey` to make one "
                    "(or to import yours)"
                )
            return (
                "the signing key or certificate cannot be read; run "
                "`manage.py createsigningkey --force` to replace them"
            )
        return None

    def process(
        self, payload: dict[str, Any], file: IO[bytes] | None, context: JobContext
    ) -> dict[str, Any]:
        """Sign the file and write the signature and a copy of the original."""
        if file is None:
            raise PermanentError("document.sign needs a file", code="no_file")
        signer = signer_load()
        name = context.input_name or "document"
        data = file.read()
        signed_at = timezone.now()
        signature = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(data)
            .add_signer(signer.certificate, signer.key, hashes.SHA256())
            .sign(
                serialization.Encoding.DER,
                [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
            )
        )
        signature_name = f"{name}{SIGNATURE_SUFFIX}"
        context.output_path(name).write_bytes(data)
        context.output_path(signature_name).write_bytes(signature)
        return {
            "sha256": hashlib.sha256(data).hexdigest(),
            "signer": signer.subject,
            "signature": signature_name,
            "signed_at": signed_at.isoformat(),
        }


class DocumentVerify(JobType):
    """Check a detached CMS signature over a document and report who signed it."""

    name = "document.verify"
    description = (
        "Verifies a detached CMS/PKCS#7 signature over the item's file. Either the payload "
        "carries the DER signature in base64 as `signature`, or the file is a ZIP holding "
        "exactly a document NAME.EXT and its NAME.EXT.p7s. The result says `valid`, why not "
        "(`reason` and `code`: `invalid_signature`, or `signer_not_found` when no carried "
        "certificate matches the SignerInfo), the document's `sha256` and the `signer`: the "
        "certificate the SignerInfo names, the one the signature verified with. The chain "
        "is checked only against trust anchors the operator configured "
        "(BATCHSITE_SIGNING_TRUST): then `trusted` and `trust_anchor` say whether and which."
    )
    payload_schema = {
        "type": "object",
        "properties": {
            "signature": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "the detached DER signature; omit it when the file is a ZIP pair",
            }
        },
        "additionalProperties": False,
    }
    accepts_file = True
    chunk_size = 200
    slice_size = 20

    def readiness(self) -> str | None:
        """Say what to install when the openssl program is missing."""
        if shutil.which(openssl_binary()) is None:
            return (
                "the openssl program is not installed; install OpenSSL (or name it in "
                "BATCHSITE_OPENSSL)"
            )
        anchors = trust_path()
        if anchors is not None:
            try:
                trust_anchors(anchors)
            except PermanentError as exc:
                return exc.message
        return None

    def validate_payload(self, payload: Any) -> None:
        """Accept an optional base64 `signature` and nothing else."""
        super().validate_payload(payload)
        errors = {
            f"payload.{name}": "is not a field of document.verify"
            for name in sorted(set(payload) - {"signature"})
        }
        if "signature" in payload:
            try:
                if not base64.b64decode(payload["signature"], validate=True):
                    errors["payload.signature"] = "must not be empty"
            except (TypeError, ValueError, binascii.Error):
                errors["payload.signature"] = "must be a base64 string (a DER CMS signature)"
        if errors:
            raise PayloadError(errors)

    def process(
        self, payload: dict[str, Any], file: IO[bytes] | None, context: JobContext
    ) -> dict[str, Any]:
        """Put the document and signature in a private folder and have OpenSSL check them."""
        if file is None:
            raise PermanentError("document.verify needs a file", code="no_file")
        anchors_path = trust_path()
        anchors = trust_anchors(anchors_path) if anchors_path is not None else []
        with tempfile.TemporaryDirectory(prefix="batchsite-verify-") as work:
            document = Path(work) / "document"
            signature = Path(work) / "signature.p7s"
            if "signature" in payload:
                name = context.input_name
                sha256 = _copy(file, document)
                signature.write_bytes(base64.b64decode(payload["signature"]))
                signature_name = ""
            else:
                name, signature_name, sha256 = self._unpack_pair(file, document, signature)
            checked = openssl_cms_verify(document, signature)
            signer = checked.signer
            result: dict[str, Any] = {
                "valid": checked.valid,
                "reason": checked.reason,
                "document": name,
                "sha256": sha256,
                "signer": signer.subject.rfc4514_string() if signer else None,
                "certificate_sha256": signer.fingerprint(hashes.SHA256()).hex() if signer else None,
            }
            if not checked.valid:
                result["code"] = checked.code
            if anchors_path is not None:
                result.update(self._trust(document, signature, signer, anchors_path, anchors))
        if signature_name:
            result["signature"] = signature_name
        return result

    @staticmethod
    def _trust(
        document: Path,
        signature: Path,
        signer: x509.Certificate | None,
        anchors_path: Path,
        anchors: list[x509.Certificate],
    ) -> dict[str, Any]:
        """Check the signer's chain against the operator's trust anchors."""
        if signer is None:
            return {"trusted": False, "trust_anchor": None, "trust_reason": "no valid signer"}
        trusted, reason = openssl_cms_trust(document, signature, anchors_path)
        if not trusted:
            return {"trusted": False, "trust_anchor": None, "trust_reason": reason}
        try:
            carried = pkcs7.load_der_pkcs7_certificates(signature.read_bytes())
        except ValueError:
            carried = []
        anchor = trust_anchor_of(signer, carried, anchors)
        return {
            "trusted": True,
            "trust_anchor": anchor.subject.rfc4514_string() if anchor else None,
        }

    @staticmethod
    def _unpack_pair(file: IO[bytes], document: Path, signature: Path) -> tuple[str, str, str]:
        """Extract a ZIP pair upload; return (document name, signature name, its SHA-256)."""
        if not zipfile.is_zipfile(file):
            raise PermanentError(
                "no signature: give `signature` in the payload, or upload a ZIP holding the "
                "document and its .p7s",
                code="no_signature",
            )
        file.seek(0)
        limit = getattr(settings, "BATCHSITE_VERIFY_MAX_BYTES", DEFAULT_PAIR_MAX_BYTES)
        try:
            with zipfile.ZipFile(file) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
                names = sorted(info.filename for info in members)
                signatures = [name for name in names if name.endswith(SIGNATURE_SUFFIX)]
                documents = [name for name in names if not name.endswith(SIGNATURE_SUFFIX)]
                if (
                    len(members) != 2
                    or len(signatures) != 1
                    or documents != [signatures[0][: -len(SIGNATURE_SUFFIX)]]
                ):
                    raise PermanentError(
                        "a ZIP pair must hold exactly a document NAME.EXT and its NAME.EXT.p7s; "
                        f"this one holds {names}",
                        code="not_a_pair",
                    )
                with archive.open(documents[0]) as source:
                    sha256 = _copy(source, document, limit=limit)
                with archive.open(signatures[0]) as source:
                    _copy(source, signature, limit=limit)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, EOFError) as exc:
            # RuntimeError: an encrypted member.
            raise PermanentError(f"the ZIP pair cannot be read: {exc}", code="bad_zip") from None
        return PurePosixPath(documents[0]).name, PurePosixPath(signatures[0]).name, sha256
