"""The `document.sign` and `document.verify` job types: detached CMS (PKCS#7) signatures.

`document.sign` signs each document with the site's signer (`jobs.signer`) using
cryptography's PKCS7SignatureBuilder: SHA-256, a detached signature, binary mode (no MIME
canonicalisation, so any bytes sign as they are), DER. The output is the document's own
copy plus `NAME.EXT.p7s`, which `openssl cms -verify -binary -inform DER -content NAME.EXT
-in NAME.EXT.p7s -noverify` accepts.

`document.verify` checks a detached signature over a document with `openssl cms -verify`
(`jobs.cms`), and names the certificate the signature verified with. A signature that does
not match is a result (`valid: false` with a `code` and OpenSSL's reason), not a failed
item. Where the operator names trust anchors (`BATCHSITE_SIGNING_TRUST`), a valid
signature's chain is checked against them too, and the result adds `trusted` and the
`trust_anchor` the chain ends at, or `trust_reason` when it is not trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from django.conf import settings
from django.utils import timezone

from jobs.base import JobContext, JobType, PayloadError, PermanentError, TransientError
from jobs.cms import (
    openssl_binary,
    openssl_cms_trust,
    openssl_cms_verify,
    trust_anchor_of,
    trust_anchors,
    trust_path,
)
from jobs.signer import signer_load

SIGNATURE_SUFFIX = ".p7s"
COPY_BLOCK = 256 * 1024
# A ZIP pair holds one document and one signature; refuse anything that unpacks bigger.
DEFAULT_PAIR_MAX_BYTES = 1024**3


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

    def validate_payload(self, payload: dict[str, Any]) -> None:
        """Check that `signature`, when given, is base64 of something."""
        if "signature" not in payload:
            return
        try:
            decoded = base64.b64decode(payload["signature"], validate=True)
        except (ValueError, binascii.Error):
            decoded = None
        if not decoded:
            raise PayloadError(
                {"payload.signature": "must be a non-empty base64 string (a DER CMS signature)"}
            )

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
