"""Tests for document.sign and document.verify, checked against the real `openssl` CLI."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.management import call_command
from django.utils import timezone

from batches.models import Batch, Item
from jobs.base import JobContext, PayloadError, PermanentError, TransientError
from jobs.cms import openssl_reason
from jobs.management.commands.createsigningkey import certificate_self_signed
from jobs.signer import signer_load
from jobs.signing import DocumentSign, DocumentVerify
from tests.helpers.api import assert_problem, batch_url, create_batch, error_fields

ZIP = "application/zip"
OPENSSL = "/usr/bin/openssl"
DOCUMENTS = {
    "contract.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n",
    "notes.txt": b"line one\r\nline two\nno newline at the end",
    "data.bin": b"\x00\xff\r\n\x1a" * 1000,
}


@pytest.fixture(autouse=True)
def registered(settings, tmp_path):
    """Register the signing types and give each test its own data dir."""
    settings.BATCHSITE_JOB_TYPES = [
        *settings.BATCHSITE_JOB_TYPES,
        "jobs.signing.DocumentSign",
        "jobs.signing.DocumentVerify",
    ]
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.BATCHSITE_SIGNING_KEY = tmp_path / "signer" / "key.pem"
    settings.BATCHSITE_SIGNING_CERT = tmp_path / "signer" / "cert.pem"


@pytest.fixture
def signer(settings) -> x509.Certificate:
    """Make a signer with createsigningkey at the tmp paths; return its certificate."""
    call_command("createsigningkey", "--common-name", "Test Signer", stdout=io.StringIO())
    return x509.load_pem_x509_certificate(Path(settings.BATCHSITE_SIGNING_CERT).read_bytes())


def sign(data: bytes, name: str, tmp_path: Path) -> tuple[dict, dict[str, Path]]:
    """Run document.sign on `data`; return its result and {output name: path}."""
    context = JobContext(input_name=name, output_dir=tmp_path / "out" / name)
    result = DocumentSign().process({}, io.BytesIO(data), context)
    return result, dict(context.outputs)


def verify(payload: dict, data: bytes, name: str = "document") -> dict:
    return DocumentVerify().process(payload, io.BytesIO(data), JobContext(input_name=name))


def openssl_verify(document: Path, signature: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run `openssl cms -verify` on a detached DER signature, as a recipient would."""
    command = [OPENSSL, "cms", "-verify", "-binary", "-inform", "DER", "-out", "/dev/null"]
    command += ["-content", str(document), "-in", str(signature), *extra]
    return subprocess.run(command, capture_output=True, check=False)


def certificate(
    common_name: str, key, *, issuer: tuple[x509.Certificate, object] | None = None, ca=False
) -> x509.Certificate:
    """Return a bare certificate for `key`: self-signed, or issued by (certificate, key)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = timezone.now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timezone.timedelta(minutes=5))
        .not_valid_after(now + timezone.timedelta(days=1))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    elif issuer:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def cms_sign(data: bytes, cert: x509.Certificate, key, *extra: x509.Certificate) -> bytes:
    """Sign `data` with (cert, key): a detached DER signature also carrying `extra`."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(cert, key, hashes.SHA256())
    for other in extra:
        builder = builder.add_certificate(other)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(serialization.Encoding.DER, options)


def write_pem(path: Path, *certificates: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


@pytest.fixture
def swapped_bundle() -> dict:
    """A signature by key M ("Real Signer") whose certificate set lists a decoy first."""
    real_key = ec.generate_private_key(ec.SECP256R1())
    real = certificate_self_signed(key=real_key, common_name="Real Signer", days=1)
    # An unrelated certificate with no extensions: its DER is shorter, so it sorts first
    # in the DER SET OF certificates, whatever order the builder was given.
    decoy = certificate("Trusted Signer", ec.generate_private_key(ec.SECP256R1()))
    document = DOCUMENTS["contract.pdf"]
    signature = cms_sign(document, real, real_key, decoy)
    carried = pkcs7.load_der_pkcs7_certificates(signature)
    assert carried == [decoy, real]  # the decoy really is first in the bundle
    return {"document": document, "signature": signature, "real": real, "decoy": decoy}


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def signed_pair(tmp_path, name="contract.pdf") -> tuple[bytes, bytes]:
    """Sign DOCUMENTS[name]; return (document, signature)."""
    _, outputs = sign(DOCUMENTS[name], name, tmp_path)
    return outputs[name].read_bytes(), outputs[f"{name}.p7s"].read_bytes()


# --- document.sign -------------------------------------------------------------------------------


def test_document_sign__signatures_verify_with_openssl(tmp_path, signer):
    for name, data in DOCUMENTS.items():
        before = timezone.now()
        result, outputs = sign(data, name, tmp_path)

        assert list(outputs) == [name, f"{name}.p7s"]
        assert outputs[name].read_bytes() == data
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        assert result["signer"] == "CN=Test Signer" == signer.subject.rfc4514_string()
        assert result["signature"] == f"{name}.p7s"
        assert before <= datetime.fromisoformat(result["signed_at"]) <= timezone.now()
        checked = openssl_verify(outputs[name], outputs[f"{name}.p7s"], "-noverify")
        assert checked.returncode == 0, checked.stderr.decode()
        assert b"Verification successful" in checked.stderr


def test_document_sign__certificate_works_as_a_trust_anchor(tmp_path, signer, settings):
    _, outputs = sign(DOCUMENTS["notes.txt"], "notes.txt", tmp_path)

    # Without -noverify: the chain and the certificate's purpose are checked too.
    checked = openssl_verify(
        outputs["notes.txt"],
        outputs["notes.txt.p7s"],
        "-CAfile",
        str(settings.BATCHSITE_SIGNING_CERT),
    )

    assert checked.returncode == 0, checked.stderr.decode()


def test_document_sign__signature_carries_the_signer_certificate(tmp_path, signer):
    from cryptography.hazmat.primitives.serialization import pkcs7

    _, outputs = sign(b"x", "x.txt", tmp_path)

    carried = pkcs7.load_der_pkcs7_certificates(outputs["x.txt.p7s"].read_bytes())
    assert carried == [signer]


def test_document_sign__signature_is_detached(tmp_path, signer):
    data = b"a distinctive sentence that must not be inside the signature" * 20

    _, outputs = sign(data, "d.txt", tmp_path)

    signature = outputs["d.txt.p7s"].read_bytes()
    assert b"distinctive sentence" not in signature
    assert len(signature) < len(data)


def test_document_sign__tampered_document_fails_openssl(tmp_path, signer):
    _, outputs = sign(DOCUMENTS["contract.pdf"], "contract.pdf", tmp_path)
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(DOCUMENTS["contract.pdf"].replace(b"%%EOF", b"%%EOX"))

    checked = openssl_verify(tampered, outputs["contract.pdf.p7s"], "-noverify")

    assert checked.returncode != 0
    assert b"Verification failure" in checked.stderr


def test_document_sign__without_a_signer_fails_telling_what_to_run(tmp_path):
    with pytest.raises(PermanentError) as caught:
        sign(b"doc", "doc.txt", tmp_path)

    assert caught.value.code == "no_signer"
    assert "manage.py createsigningkey" in caught.value.message


def test_document_sign_readiness__says_what_to_run_without_a_usable_signer(settings, signer):
    key = Path(settings.BATCHSITE_SIGNING_KEY)
    ready = DocumentSign().readiness()
    key.write_text("not a key")
    unreadable = DocumentSign().readiness()
    key.unlink()
    missing = DocumentSign().readiness()

    assert ready is None
    assert unreadable == (
        "the signing key or certificate cannot be read; run "
        "`manage.py createsigningkey --force` to replace them"
    )
    assert missing == (
        "there is no signing key; run `manage.py createsigningkey` to make one (or to import yours)"
    )
    assert str(settings.BATCHSITE_DATA_DIR) not in unreadable + missing  # no paths to clients


def test_document_verify_readiness__needs_the_openssl_program(settings, tmp_path):
    assert DocumentVerify().readiness() is None

    settings.BATCHSITE_OPENSSL = str(tmp_path / "no-openssl-here")

    assert DocumentVerify().readiness() == (
        "the openssl program is not installed; install OpenSSL (or name it in BATCHSITE_OPENSSL)"
    )


def test_document_sign__unreadable_signer_is_bad_signer(tmp_path, settings, signer):
    Path(settings.BATCHSITE_SIGNING_KEY).write_text("not a key")

    with pytest.raises(PermanentError) as caught:
        sign(b"doc", "doc.txt", tmp_path)

    assert caught.value.code == "bad_signer"


def test_document_sign__key_of_another_certificate_is_retried(tmp_path, settings, signer):
    key_path = Path(settings.BATCHSITE_SIGNING_KEY)
    old_key = key_path.read_bytes()
    call_command("createsigningkey", "--force", stdout=io.StringIO())
    key_path.write_bytes(old_key)  # as if caught halfway through a rotation

    with pytest.raises(TransientError) as caught:
        sign(b"doc", "doc.txt", tmp_path)

    assert caught.value.code == "signer_mismatch"


def test_document_sign__new_signer_is_picked_up_without_a_restart(tmp_path, signer):
    first, _ = sign(b"doc", "doc.txt", tmp_path / "1")
    assert signer_load() is signer_load()  # loaded once, then cached

    call_command("createsigningkey", "--force", "--common-name", "Rotated", stdout=io.StringIO())
    second, outputs = sign(b"doc", "doc.txt", tmp_path / "2")

    assert (first["signer"], second["signer"]) == ("CN=Test Signer", "CN=Rotated")
    assert openssl_verify(outputs["doc.txt"], outputs["doc.txt.p7s"], "-noverify").returncode == 0


def test_document_sign__rsa_signer_signs_too(tmp_path, signer):
    call_command("createsigningkey", "--force", "--key-type", "rsa", stdout=io.StringIO())

    _, outputs = sign(DOCUMENTS["data.bin"], "data.bin", tmp_path)

    checked = openssl_verify(outputs["data.bin"], outputs["data.bin.p7s"], "-noverify")
    assert checked.returncode == 0, checked.stderr.decode()
    assert verify({}, zip_of({n: p.read_bytes() for n, p in outputs.items()}))["valid"] is True


def test_document_sign__payload_takes_no_fields():
    DocumentSign().payload_check({})
    with pytest.raises(PayloadError) as caught:
        DocumentSign().payload_check({"digest": "sha1"})

    assert set(caught.value.errors) == {"payload.digest"}


# --- document.verify -----------------------------------------------------------------------------


def test_document_verify__signature_in_the_payload_is_valid(tmp_path, signer):
    for name, data in DOCUMENTS.items():
        _, outputs = sign(data, name, tmp_path)
        signature = base64.b64encode(outputs[f"{name}.p7s"].read_bytes()).decode()

        result = verify({"signature": signature}, data, name)

        assert result == {
            "valid": True,
            "reason": "",
            "document": name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "signer": "CN=Test Signer",
            "certificate_sha256": signer.fingerprint(hashes.SHA256()).hex(),
        }


def test_document_verify__tampered_document_is_invalid_not_failed(tmp_path, signer):
    document, signature = signed_pair(tmp_path)
    tampered = document.replace(b"%%EOF", b"%%EOX")

    result = verify({"signature": base64.b64encode(signature).decode()}, tampered, "contract.pdf")

    assert result["valid"] is False
    assert "verification failure" in result["reason"].lower()
    assert result["sha256"] == hashlib.sha256(tampered).hexdigest()
    assert result["signer"] == "CN=Test Signer"


def test_document_verify__signature_of_another_document_is_invalid(tmp_path, signer):
    _, other = signed_pair(tmp_path, "notes.txt")

    result = verify({"signature": base64.b64encode(other).decode()}, DOCUMENTS["contract.pdf"])

    assert result["valid"] is False


def test_document_verify__garbage_signature_is_invalid_with_no_signer(signer):
    garbage = base64.b64encode(b"this is not DER").decode()

    result = verify({"signature": garbage}, b"document")

    assert result["valid"] is False
    assert result["reason"]
    assert result["signer"] is None


def test_document_verify__zip_pair_is_valid(tmp_path, signer):
    document, signature = signed_pair(tmp_path)
    pair = zip_of({"contract.pdf.p7s": signature, "contract.pdf": document})

    result = verify({}, pair, "contract.zip")

    assert result["valid"] is True, result["reason"]
    assert result["document"] == "contract.pdf"
    assert result["signature"] == "contract.pdf.p7s"
    assert result["sha256"] == hashlib.sha256(document).hexdigest()
    assert result["signer"] == "CN=Test Signer"


def test_document_verify__tampered_zip_pair_is_invalid(tmp_path, signer):
    document, signature = signed_pair(tmp_path)
    pair = zip_of({"contract.pdf": document + b"appended", "contract.pdf.p7s": signature})

    result = verify({}, pair, "contract.zip")

    assert result["valid"] is False
    assert result["reason"]


def test_document_verify__reports_the_certificate_that_signed_not_the_first_in_the_bundle(
    swapped_bundle,
):
    signature = base64.b64encode(swapped_bundle["signature"]).decode()

    result = verify({"signature": signature}, swapped_bundle["document"], "contract.pdf")

    assert result["valid"] is True, result["reason"]
    assert result["signer"] == "CN=Real Signer"
    assert result["certificate_sha256"] == swapped_bundle["real"].fingerprint(hashes.SHA256()).hex()
    assert "Trusted Signer" not in json.dumps(result)


def test_document_verify__swapped_bundle_in_a_zip_pair_names_the_real_signer(swapped_bundle):
    pair = zip_of(
        {
            "contract.pdf": swapped_bundle["document"],
            "contract.pdf.p7s": swapped_bundle["signature"],
        }
    )

    result = verify({}, pair, "contract.zip")

    assert (result["valid"], result["signer"]) == (True, "CN=Real Signer")


def test_document_verify__tampered_swapped_bundle_names_the_claimed_signer(swapped_bundle):
    signature = base64.b64encode(swapped_bundle["signature"]).decode()

    result = verify({"signature": signature}, swapped_bundle["document"] + b"x", "contract.pdf")

    assert (result["valid"], result["code"]) == (False, "invalid_signature")
    assert result["signer"] == "CN=Real Signer"


def test_document_verify__signer_info_matching_no_carried_certificate_is_invalid(tmp_path):
    # Signed by M, but the signature carries only the decoy: its SignerInfo matches nothing.
    for name in ("real", "decoy"):
        key = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        write_pem(tmp_path / f"{name}.pem", certificate(f"{name} signer", key))
    document = tmp_path / "document.txt"
    document.write_bytes(b"signed by real, carrying only decoy")
    signature = tmp_path / "document.txt.p7s"
    made = subprocess.run(
        [OPENSSL, "cms", "-sign", "-binary", "-outform", "DER", "-in", str(document),
         "-signer", str(tmp_path / "real.pem"), "-inkey", str(tmp_path / "real.key"),
         "-nocerts", "-certfile", str(tmp_path / "decoy.pem"), "-out", str(signature)],
        capture_output=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    assert [c.subject.rfc4514_string() for c in pkcs7.load_der_pkcs7_certificates(
        signature.read_bytes()
    )] == ["CN=decoy signer"]  # fmt: skip

    result = verify(
        {"signature": base64.b64encode(signature.read_bytes()).decode()}, document.read_bytes()
    )

    assert (result["valid"], result["code"], result["signer"]) == (False, "signer_not_found", None)
    assert result["certificate_sha256"] is None
    assert "signer certificate not found" in result["reason"]


def test_document_verify__without_trust_anchors_says_nothing_of_trust(tmp_path, signer):
    document, signature = signed_pair(tmp_path)

    result = verify({"signature": base64.b64encode(signature).decode()}, document)

    assert "trusted" not in result
    assert "trust_anchor" not in result


def test_document_verify__trust_anchors_name_the_anchor_the_chain_ends_at(tmp_path, settings):
    root_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    root = certificate("Root CA", root_key, ca=True)
    leaf = certificate("Leaf Signer", leaf_key, issuer=(root, root_key))
    other = certificate("Other CA", ec.generate_private_key(ec.SECP256R1()), ca=True)
    document = DOCUMENTS["notes.txt"]
    signature = base64.b64encode(cms_sign(document, leaf, leaf_key)).decode()
    settings.BATCHSITE_SIGNING_TRUST = write_pem(tmp_path / "trust.pem", other, root)

    trusted = verify({"signature": signature}, document)
    settings.BATCHSITE_SIGNING_TRUST = write_pem(tmp_path / "other.pem", other)
    untrusted = verify({"signature": signature}, document)

    assert (trusted["valid"], trusted["signer"]) == (True, "CN=Leaf Signer")
    assert (trusted["trusted"], trusted["trust_anchor"]) == (True, "CN=Root CA")
    assert (untrusted["valid"], untrusted["trusted"], untrusted["trust_anchor"]) == (
        True,
        False,
        None,
    )
    assert "certificate verify error" in untrusted["trust_reason"]


def test_document_verify__chain_through_a_carried_intermediate_names_the_root(tmp_path, settings):
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root = certificate("Root CA", keys[0], ca=True)
    intermediate = certificate("Intermediate CA", keys[1], issuer=(root, keys[0]), ca=True)
    leaf = certificate("Leaf Signer", keys[2], issuer=(intermediate, keys[1]))
    document = DOCUMENTS["data.bin"]
    signature = cms_sign(document, leaf, keys[2], intermediate)
    settings.BATCHSITE_SIGNING_TRUST = write_pem(tmp_path / "trust.pem", root)

    result = verify({"signature": base64.b64encode(signature).decode()}, document)

    assert (result["valid"], result["signer"]) == (True, "CN=Leaf Signer")
    assert (result["trusted"], result["trust_anchor"]) == (True, "CN=Root CA")


def test_document_verify__decoy_in_the_bundle_does_not_make_the_signature_trusted(
    swapped_bundle, tmp_path, settings
):
    settings.BATCHSITE_SIGNING_TRUST = write_pem(tmp_path / "trust.pem", swapped_bundle["decoy"])
    signature = base64.b64encode(swapped_bundle["signature"]).decode()

    result = verify({"signature": signature}, swapped_bundle["document"])

    assert (result["valid"], result["signer"]) == (True, "CN=Real Signer")
    assert (result["trusted"], result["trust_anchor"]) == (False, None)


def test_document_verify__self_signed_signer_as_its_own_anchor(tmp_path, signer, settings):
    settings.BATCHSITE_SIGNING_TRUST = settings.BATCHSITE_SIGNING_CERT
    document, signature = signed_pair(tmp_path)

    result = verify({"signature": base64.b64encode(signature).decode()}, document)

    assert (result["trusted"], result["trust_anchor"]) == (True, "CN=Test Signer")


def test_document_verify__unreadable_trust_anchors_fail_and_block_readiness(tmp_path, settings):
    settings.BATCHSITE_SIGNING_TRUST = tmp_path / "missing.pem"

    with pytest.raises(PermanentError) as caught:
        verify({"signature": "AAAA"}, b"document")

    assert caught.value.code == "bad_trust"
    assert DocumentVerify().readiness() == caught.value.message
    assert str(tmp_path) not in caught.value.message


@pytest.mark.parametrize(
    ("files", "code"),
    [
        pytest.param({"a.pdf": b"a"}, "not_a_pair", id="document-only"),
        pytest.param({"a.pdf.p7s": b"s"}, "not_a_pair", id="signature-only"),
        pytest.param({"a.pdf": b"a", "b.pdf.p7s": b"s"}, "not_a_pair", id="names-differ"),
        pytest.param({"a.pdf": b"a", "b.pdf": b"b"}, "not_a_pair", id="no-signature"),
        pytest.param(
            {"a.pdf": b"a", "a.pdf.p7s": b"s", "c.txt": b"c"}, "not_a_pair", id="three-files"
        ),
        pytest.param({"a.p7s": b"a", "a.p7s.p7s": b"s"}, "not_a_pair", id="two-signatures"),
    ],
)
def test_document_verify__zip_that_is_not_a_pair_fails(files, code, signer):
    with pytest.raises(PermanentError) as caught:
        verify({}, zip_of(files), "upload.zip")

    assert caught.value.code == code


def test_document_verify__plain_file_without_a_signature_fails(signer):
    with pytest.raises(PermanentError) as caught:
        verify({}, b"just a document", "doc.txt")

    assert caught.value.code == "no_signature"


def test_document_verify__oversized_pair_fails(tmp_path, signer, settings):
    settings.BATCHSITE_VERIFY_MAX_BYTES = 100
    pair = zip_of({"big.txt": b"x" * 1000, "big.txt.p7s": b"s"})

    with pytest.raises(PermanentError) as caught:
        verify({}, pair)

    assert caught.value.code == "too_large"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"signature": "not base64!"}, "payload.signature", id="not-base64"),
        pytest.param({"signature": ""}, "payload.signature", id="empty"),
        pytest.param({"signature": 5}, "payload.signature", id="int"),
        pytest.param({"sig": "AAAA"}, "payload.sig", id="unknown-field"),
    ],
)
def test_document_verify__bad_payload_is_refused(payload, field):
    with pytest.raises(PayloadError) as caught:
        DocumentVerify().payload_check(payload)

    assert set(caught.value.errors) == {field}


def test_document_verify__bad_payload_is_400_at_submission(client_a):
    batch = create_batch(client_a, type="document.verify")

    response = client_a.post(
        batch_url(batch, "items/"),
        [{"payload": {"signature": "AAAA"}}, {"payload": {"signature": "%%%"}}],
        format="json",
    )

    body = assert_problem(response, 400, "invalid")
    assert error_fields(body) == {"[1].payload.signature"}
    assert not Item.objects.filter(batch_id=batch["id"]).exists()


def test_openssl_reason__keeps_the_message_and_each_reason():
    output = (
        "CMS Verification failure\n"
        "40D7B497AC7F0000:error:1700009E:CMS routines:CMS_SignerInfo_verify_content:"
        "verification failure:../crypto/cms/cms_sd.c:1000:\n"
        "40D7B497AC7F0000:error:1700006D:CMS routines:CMS_verify:content verify error:"
        "../crypto/cms/cms_smime.c:455:\n"
    )

    assert openssl_reason(output) == (
        "CMS Verification failure; CMS_SignerInfo_verify_content: verification failure; "
        "CMS_verify: content verify error"
    )


# --- through a batch -----------------------------------------------------------------------------


def upload(client, batch, body: bytes):
    response = client.generic("POST", batch_url(batch, "upload/"), body, ZIP)
    assert response.status_code == 200, response.content
    return response.json()


def run_commit(client, batch, django_capture_on_commit_callbacks) -> Batch:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(batch_url(batch, "commit/"))
    assert response.status_code == 200, response.content
    return Batch.objects.get(pk=batch["id"])


def package_of(client, batch) -> zipfile.ZipFile:
    response = client.get(batch_url(batch, "package/"))
    assert response.status_code == 200
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def test_document_sign__batch_package_holds_originals_signatures_and_manifest(
    client_a, signer, tmp_path, django_capture_on_commit_callbacks
):
    batch = create_batch(client_a, type="document.sign")
    assert upload(client_a, batch, zip_of(DOCUMENTS))["added"] == len(DOCUMENTS)

    finished = run_commit(client_a, batch, django_capture_on_commit_callbacks)

    assert finished.status == Batch.Status.FINISHED
    assert finished.counts()["succeeded"] == len(DOCUMENTS)
    archive = package_of(client_a, batch)
    expected = {*DOCUMENTS, *(f"{name}.p7s" for name in DOCUMENTS), "manifest.json"}
    assert set(archive.namelist()) == expected
    manifest = json.loads(archive.read("manifest.json"))
    assert {entry["name"] for entry in manifest["files"]} == expected - {"manifest.json"}
    for entry in manifest["files"]:
        assert entry["sha256"] == hashlib.sha256(archive.read(entry["name"])).hexdigest()
    archive.extractall(tmp_path / "package")
    for name, data in DOCUMENTS.items():
        assert archive.read(name) == data
        document, signature = tmp_path / "package" / name, tmp_path / "package" / f"{name}.p7s"
        checked = openssl_verify(document, signature, "-noverify")
        assert checked.returncode == 0, checked.stderr.decode()
    results = dict(Item.objects.filter(batch=finished).values_list("external_id", "result"))
    assert {name: r["sha256"] for name, r in results.items()} == {
        name: hashlib.sha256(data).hexdigest() for name, data in DOCUMENTS.items()
    }
    assert {r["signer"] for r in results.values()} == {"CN=Test Signer"}


def test_document_sign__signer_removed_after_commit_fails_its_items(
    client_a, signer, settings, django_capture_on_commit_callbacks
):
    batch = create_batch(client_a, type="document.sign")
    upload(client_a, batch, zip_of({"a.txt": b"a"}))
    with django_capture_on_commit_callbacks() as signing:
        assert client_a.post(batch_url(batch, "commit/")).status_code == 200
    Path(settings.BATCHSITE_SIGNING_KEY).unlink()

    for work in signing:
        work()

    finished = Batch.objects.get(pk=batch["id"])
    item = Item.objects.get(batch=finished)
    assert (item.status, item.error_code) == (Item.Status.FAILED, "no_signer")
    assert "createsigningkey" in item.error_message


def test_document_verify__batch_of_zip_pairs(
    client_a, signer, tmp_path, django_capture_on_commit_callbacks
):
    document, signature = signed_pair(tmp_path)
    pairs = {
        "good.zip": zip_of({"contract.pdf": document, "contract.pdf.p7s": signature}),
        "tampered.zip": zip_of({"contract.pdf": document[:-1], "contract.pdf.p7s": signature}),
        "lonely.zip": zip_of({"contract.pdf": document}),
    }
    batch = create_batch(client_a, type="document.verify")
    upload(client_a, batch, zip_of(pairs))

    finished = run_commit(client_a, batch, django_capture_on_commit_callbacks)

    assert finished.status == Batch.Status.FINISHED
    items = {item.external_id: item for item in Item.objects.filter(batch=finished)}
    assert items["good.zip"].result["valid"] is True
    assert items["tampered.zip"].status == Item.Status.SUCCEEDED
    assert items["tampered.zip"].result["valid"] is False
    assert (items["lonely.zip"].status, items["lonely.zip"].error_code) == (
        Item.Status.FAILED,
        "not_a_pair",
    )
