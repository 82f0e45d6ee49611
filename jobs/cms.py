"""Check detached CMS (PKCS#7) signatures with the `openssl cms -verify` program.

cryptography builds PKCS#7 signatures but has no public API to verify them, and parsing
the SignedData ourselves would mean a new dependency (asn1crypto) or hand-written ASN.1 and
signature checks. So verification is delegated to the `openssl cms -verify` CLI (OpenSSL is
what cryptography itself is built on), run with argument lists, never a shell, on files in
a private temporary folder. `-noverify` checks the signature against the certificate its
SignerInfo names (matched by issuer and serial number or subject key identifier among the
certificates the signature carries) but not that certificate's chain. The signer returned
is that certificate, the one OpenSSL wrote with `-signer` after checking the signature with
it, never merely the first certificate of the bundle (which may be anyone's). A signature
that does not match still names the certificate its SignerInfo claims, found the same way
with `-nosigs`; a SignerInfo that matches none of the carried certificates is
`signer_not_found`, with no signer.

Trust anchors are the operator's (`BATCHSITE_SIGNING_TRUST`, a PEM bundle). A chain is
checked against `-CAfile` that bundle alone (not OpenSSL's default CA path or store;
OpenSSL's S/MIME signing purpose; the carried certificates as intermediates), and the
anchor it ends at is found with cryptography, among the anchors, by walking issuers from
the signer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from django.conf import settings

from jobs.base import PermanentError, TransientError

DEFAULT_OPENSSL_TIMEOUT = 120
MAX_REASON = 500

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
