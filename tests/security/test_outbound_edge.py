"""The network edge: deadlines a slow peer cannot stretch, addresses it cannot smuggle in.

Every server here is on loopback: a drip server that sends one byte at a time, pytest's
HTTP server, a TLS server with a certificate made in the test, a stand-in proxy. Names are
answered by a resolver stub, so no test sends a packet anywhere else.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from batches import webhooks
from batches.models import Batch, BatchError, WebhookDelivery
from jobs import JobContext, PermanentError, TransientError, http_request, outbound
from jobs.http_request import HttpRequest
from jobs.image_derive import origin_fetch
from tests.factories import AccountFactory
from tests.helpers.api import BATCHES
from tests.webhooks.helpers import finished_batch

LIMIT = 2
# The most a transfer may run past its limit here: the issue allows one second; the rest
# is room for a loaded machine. A drip lasts DRIP_SECONDS, far beyond either.
SLACK = 3.0
DRIP_SECONDS = 30.0
DRIP_INTERVAL = 0.2
PUBLIC = "93.184.216.34"


# --- a server that drips -------------------------------------------------------------------------


class LoopbackServer:
    """A TCP server on loopback answering each connection on its own thread with `answer`."""

    def __init__(self):
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.connections = 0

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self):
        accepter = threading.Thread(target=self._accept, daemon=True)
        accepter.start()
        self.threads.append(accepter)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.listener.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                self.answer(conn, conn.recv(65536))
            except OSError:
                return  # the client hung up

    def answer(self, conn: socket.socket, request: bytes) -> None:
        raise NotImplementedError


class DripServer(LoopbackServer):
    """Answer every request one byte every DRIP_INTERVAL, for DRIP_SECONDS.

    `stage` is where the drip happens: in the status line and headers, or in a body whose
    headers came at once.
    """

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def answer(self, conn: socket.socket, request: bytes) -> None:
        if self.stage == "body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            byte = b"x"
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            byte = b"a"
        for _ in range(int(DRIP_SECONDS / DRIP_INTERVAL)):
            if self.stop.wait(DRIP_INTERVAL):
                return
            conn.sendall(byte)


@pytest.fixture(params=["headers", "body"])
def drip(request, settings) -> Iterator[DripServer]:
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["127.0.0.1"]
    with DripServer(request.param) as server:
        yield server


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    elapsed: list[float] = []
    started = time.monotonic()
    try:
        yield elapsed
    finally:
        elapsed.append(time.monotonic() - started)


# --- every transfer ends at its limit ------------------------------------------------------------


@pytest.mark.slow
def test_source_download_ends_at_its_limit_whatever_the_peer_sends(
    drip, settings, client_a, django_capture_on_commit_callbacks
):
    settings.BATCHSITE_SOURCE_TIMEOUT = LIMIT

    with stopwatch() as elapsed, django_capture_on_commit_callbacks(execute=True):
        response = client_a.post(BATCHES, {"source_url": drip.url("/items.jsonl")}, format="json")

    assert response.status_code == 201, response.content
    assert elapsed[0] < LIMIT + SLACK
    batch = Batch.objects.get(pk=response.json()["id"])
    assert batch.status == Batch.Status.FAILED
    (error,) = BatchError.objects.filter(batch=batch)
    assert error.message == f"the source took more than {LIMIT} seconds"


@pytest.mark.slow
def test_http_request_ends_at_its_timeout_whatever_the_peer_sends(drip):
    payload = {"url": drip.url(), "timeout": LIMIT}

    with stopwatch() as elapsed, pytest.raises(TransientError) as raised:
        HttpRequest().process(payload, None, JobContext(attempt=1, label="drip#0"))

    assert elapsed[0] < LIMIT + SLACK
    assert raised.value.code == "timeout"


@pytest.mark.slow
def test_image_origin_fetch_ends_at_its_limit_whatever_the_peer_sends(drip, settings):
    settings.BATCHSITE_SOURCE_TIMEOUT = LIMIT

    with stopwatch() as elapsed, pytest.raises(TransientError) as raised:
        origin_fetch(drip.url("/image.png"))

    assert elapsed[0] < LIMIT + SLACK
    assert raised.value.code == "origin_timeout"


@pytest.mark.slow
@pytest.mark.django_db
def test_webhook_try_ends_at_its_limit_whatever_the_receiver_sends(drip, settings):
    settings.BATCHSITE_WEBHOOK_TIMEOUT = LIMIT

    with stopwatch() as elapsed:
        batch = finished_batch(AccountFactory(), drip.url("/hook"))

    assert elapsed[0] < LIMIT + SLACK
    delivery = WebhookDelivery.objects.get(batch=batch)
    (attempt,) = delivery.attempt_log.all()
    if drip.stage == "headers":
        assert (delivery.status, attempt.error) == ("pending", f"timed out after {LIMIT}s")
    else:
        # The 200 came in time; only its body dragged on, and that is the receiver's affair.
        assert (delivery.status, attempt.status_code) == ("succeeded", 200)


@pytest.mark.slow
def test_deadline_ends_a_transfer_between_bytes_not_after_them(drip):
    with (
        stopwatch() as elapsed,
        pytest.raises(httpx.TimeoutException),
        outbound.Client(timeout=LIMIT * 10) as client,
        outbound.deadline(LIMIT),
        outbound.fetch(client, "GET", drip.url()) as response,
    ):
        response.read()

    assert elapsed[0] < LIMIT + SLACK
    assert drip.connections == 1


# --- addresses that carry a private one inside --------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::c0a8:101",  # local-use NAT64 of 192.168.1.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
        "fec0::1",  # site-local
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "::ffff:7f00:1",  # IPv4-mapped 127.0.0.1
    ],
)
def test_ipv6_forms_of_internal_addresses_are_refused(settings, client_a, address):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["*"]

    response = client_a.post(BATCHES, {"source_url": f"http://[{address}]/x.jsonl"}, format="json")

    assert response.status_code == 400
    assert "non-public address" in response.json()["detail"]
    assert not Batch.objects.exists()


@pytest.mark.parametrize(
    "address", ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "2606:2800:220:1::1", PUBLIC]
)
def test_public_addresses_in_any_form_are_public(address):
    assert outbound.is_public(address)


# --- the address checked is the address connected to ----------------------------------------------


def stub_resolver(monkeypatch, answers: dict[str, list[str]]) -> list[str]:
    """Answer lookups of the names in `answers` from its lists, one entry per lookup (the
    last one repeating); pass other names to the real resolver. Return the names asked."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        previous = asked.count(host) - 1
        address = answers[host][min(previous, len(answers[host]) - 1)]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_that_rebinds_reaches_only_the_address_that_was_checked():
    # Public to the first lookup, loopback to every later one: a check that looked the
    # name up apart from the connection would approve one address and connect to another.
    # The public address is served inside a network namespace made for the test.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to make a network namespace")
    probe = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.security.rebind_probe"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    found = json.loads(probe.stdout.strip().splitlines()[-1])

    assert found == {"reached": [PUBLIC], "lookups": 1, "outcome": "fetched"}


def test_a_name_that_rebinds_to_the_inside_between_lookups_is_refused(
    settings, monkeypatch, httpserver
):
    # The check made when a URL is accepted saw a public address; the connection's own
    # lookup sees loopback, and is refused, not followed.
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["*.example"]
    asked = stub_resolver(monkeypatch, {"rebind.example": [PUBLIC, "127.0.0.1"]})
    httpserver.expect_request("/").respond_with_data("inside")
    payload = {"url": f"http://rebind.example:{httpserver.port}/"}
    HttpRequest().payload_check(payload)

    with pytest.raises(PermanentError) as raised:
        HttpRequest().process(payload, None, JobContext(attempt=1, label="rebind#0"))

    assert raised.value.code == "refused"
    assert "resolves to 127.0.0.1" in str(raised.value)
    assert httpserver.log == []
    assert asked == ["rebind.example", "rebind.example"]


def test_connection_goes_to_the_checked_address_keeping_host_and_sni(
    settings, monkeypatch, tmp_path
):
    name = "pinned.example"
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = [name]
    asked = stub_resolver(monkeypatch, {name: ["127.0.0.1"]})
    seen: dict[str, str] = {}
    with (
        tls_server(tmp_path, name, seen) as (port, trust),
        outbound.Client(verify=trust, timeout=10) as client,
        outbound.fetch(client, "GET", f"https://{name}:{port}/hello") as response,
    ):
        body = response.read()

    assert (response.status_code, body) == (200, b"hello over TLS")
    assert seen == {"sni": name, "host": f"{name}:{port}"}
    # One lookup, made by the connection itself, which then used the address it got.
    assert asked == [name]


@contextmanager
def tls_server(tmp_path, name: str, seen: dict[str, str]) -> Iterator[tuple[int, ssl.SSLContext]]:
    """Serve one HTTPS request on loopback with a certificate for `name`; record SNI and Host."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    server_context.sni_callback = lambda sock, sni, ctx: seen.__setitem__("sni", sni)
    trust = ssl.create_default_context(cafile=str(cert_file))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                request = tls.recv(65536).decode("latin-1")
                for line in request.split("\r\n")[1:]:
                    header, _, value = line.partition(":")
                    if header.lower() == "host":
                        seen["host"] = value.strip()
                body = b"hello over TLS"
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
        except OSError:
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], trust
    finally:
        thread.join(timeout=10)
        listener.close()


# --- proxies and ports ----------------------------------------------------------------------------


class StandInProxy(LoopbackServer):
    """A 'proxy' that answers every request itself, recording its request line."""

    def __init__(self):
        super().__init__()
        self.requests: list[str] = []

    def answer(self, conn: socket.socket, request: bytes) -> None:
        self.requests.append(request.split(b"\r\n")[0].decode())
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nproxy")


def test_proxy_variables_in_the_environment_are_ignored(settings, monkeypatch, httpserver):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]
    # A client made before the variables were set would not show whether they are read.
    monkeypatch.setattr(http_request, "_connections", {})
    httpserver.expect_request("/direct").respond_with_data("direct")
    with StandInProxy() as proxy:
        for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(variable, proxy.url())
        for variable in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(variable, raising=False)

        result = HttpRequest().process(
            {"url": httpserver.url_for("/direct")}, None, JobContext(attempt=1, label="p#0")
        )

    assert (result["status"], result["body"]) == (200, "direct")
    assert proxy.requests == []


def test_a_configured_proxy_carries_outbound_requests(settings, httpserver):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]
    with StandInProxy() as proxy:
        settings.BATCHSITE_OUTBOUND_PROXY = proxy.url()[:-1]
        url = httpserver.url_for("/via")
        with outbound.Client(timeout=10) as client, outbound.fetch(client, "GET", url) as answer:
            body = answer.read()

    assert body == b"proxy"
    assert proxy.requests == [f"GET {url} HTTP/1.1"]
    assert httpserver.log == []


def test_allowed_ports_refuse_any_other_port(settings, client_a, httpserver):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]
    settings.BATCHSITE_OUTBOUND_ALLOWED_PORTS = [443]

    response = client_a.post(BATCHES, {"source_url": httpserver.url_for("/x.jsonl")}, format="json")

    assert response.status_code == 400
    assert (
        f"port {httpserver.port} is not in BATCHSITE_OUTBOUND_ALLOWED_PORTS (443)"
        in (response.json()["detail"])
    )
    outbound.check_url("https://localhost/x.jsonl")


@pytest.mark.django_db
def test_webhook_redirect_sends_nothing_to_the_location(settings, httpserver):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]
    httpserver.expect_request("/moved", method="POST").respond_with_data(
        "", status=302, headers={"Location": "/elsewhere"}
    )

    batch = finished_batch(AccountFactory(), httpserver.url_for("/moved"))

    assert [request.path for request, _ in httpserver.log] == ["/moved"]
    delivery = WebhookDelivery.objects.get(batch=batch)
    assert delivery.last_error.endswith(webhooks.NOT_FOLLOWED)
