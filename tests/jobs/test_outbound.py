"""Tests for jobs.outbound: the allow-list, the public-address rule and hop-by-hop redirects.

Requests go to a real HTTP server on loopback (pytest-httpserver). Hosts that must never be
contacted (example.com) are refused before any connection is made.
"""

from __future__ import annotations

import socket

import pytest

from jobs import outbound
from jobs.outbound import OutboundRefused, check_url, fetch


@pytest.fixture
def allow(settings):
    def set_hosts(*hosts: str) -> None:
        settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = list(hosts)

    return set_hosts


@pytest.fixture
def client():
    with outbound.Client(timeout=10) as client:
        yield client


def fake_dns(monkeypatch, *addresses: str) -> list[str]:
    """Make every name resolve to `addresses`; return the list of names looked up."""
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        asked.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses
        ]

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)
    return asked


# --- check_url ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://localhost/items.jsonl",
        "file:///etc/passwd",
        "gopher://localhost/",
        "javascript:alert(1)",
        "localhost/items.jsonl",
    ],
)
def test_check_url__non_http_schemes_are_refused(allow, url):
    allow("localhost", "*")

    with pytest.raises(OutboundRefused, match="only http and https"):
        check_url(url)


def test_check_url__url_without_a_host_is_refused(allow):
    allow("*")

    with pytest.raises(OutboundRefused, match="no host"):
        check_url("http:///items.jsonl")


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ([], "http://localhost/x"),
        (["example.org"], "http://example.com/x"),
        (["localhost"], "http://127.0.0.1/x"),
        (["*.example.com"], "http://example.com/x"),
        (["*.example.com"], "http://evilexample.com/x"),
        (["*.example.com"], "http://example.com.evil.org/x"),
        (["localhost"], "http://localhost@example.com/x"),
    ],
    ids=["empty-list", "other-host", "ip-of-a-named-host", "wildcard-apex", "wildcard-suffix",
         "wildcard-prefix", "userinfo"],
)  # fmt: skip
def test_check_url__hosts_not_on_the_list_are_refused(allow, allowed, url):
    allow(*allowed)

    with pytest.raises(OutboundRefused, match="not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS"):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/x",
        "https://localhost:8443/x?y=1",
        "http://LOCALHOST/x",
        "http://localhost./x",
    ],
)
def test_check_url__explicitly_named_host_is_allowed_even_on_loopback(allow, url):
    allow("localhost")

    assert check_url(url) is None


def test_check_url__explicitly_named_loopback_ip_is_allowed(allow):
    allow("127.0.0.1")

    assert check_url("http://127.0.0.1:9/x") is None


def test_check_url__wildcard_host_resolving_to_loopback_is_refused(allow):
    allow("*")

    with pytest.raises(OutboundRefused, match="non-public address"):
        check_url("http://localhost/x")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "10.1.2.3",
        "192.168.0.10",
        "172.16.5.4",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "[::ffff:127.0.0.1]",
        "[fe80::1]",
        "2130706433",
    ],
)
def test_check_url__wildcard_refuses_non_public_ip_literals(allow, host):
    allow("*")

    with pytest.raises(OutboundRefused, match="non-public address"):
        check_url(f"http://{host}/x")


def test_check_url__wildcard_allows_a_public_ip_literal(allow):
    allow("*")

    assert check_url("http://93.184.216.34/x") is None


def test_check_url__wildcard_host_resolving_to_a_private_address_is_refused(allow, monkeypatch):
    allow("*.example.com")
    asked = fake_dns(monkeypatch, "93.184.216.34", "10.0.0.7")

    with pytest.raises(OutboundRefused, match=r"10\.0\.0\.7"):
        check_url("http://files.example.com/x")

    assert asked == ["files.example.com"]


def test_check_url__wildcard_host_resolving_to_public_addresses_is_allowed(allow, monkeypatch):
    allow("*.example.com")
    asked = fake_dns(monkeypatch, "93.184.216.34")

    assert check_url("https://files.example.com/x") is None
    assert asked == ["files.example.com"]


def test_check_url__named_host_is_not_resolved(allow, monkeypatch):
    allow("files.example.com")
    asked = fake_dns(monkeypatch, "10.0.0.7")

    assert check_url("https://files.example.com/x") is None
    assert asked == []


def test_check_url__host_that_does_not_resolve_is_refused(allow, monkeypatch):
    allow("*")

    def getaddrinfo(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)

    with pytest.raises(OutboundRefused, match="does not resolve"):
        check_url("http://nowhere.invalid/x")


@pytest.mark.parametrize("allowed", ["*", "*.example.com", "files.example.com"])
@pytest.mark.parametrize("port", ["99999", "http"])
def test_check_url__bad_port_is_refused_as_such(allow, monkeypatch, allowed, port):
    # Callers catch OutboundRefused; a bare ValueError escapes them (a 500 at create, a
    # batch stuck `ingesting` on a redirect).
    allow(allowed)
    fake_dns(monkeypatch, "93.184.216.34")

    with pytest.raises(OutboundRefused):
        check_url(f"http://files.example.com:{port}/x")


# --- fetch ----------------------------------------------------------------------------------------


def test_fetch__streams_the_response_of_an_allowed_url(allow, client, httpserver):
    allow("localhost")
    httpserver.expect_request("/data").respond_with_data("hello", content_type="text/plain")

    with fetch(client, "GET", httpserver.url_for("/data")) as response:
        body = b"".join(response.iter_bytes())

    assert response.status_code == 200
    assert body == b"hello"


def test_fetch__refuses_a_url_before_connecting(allow, client, httpserver):
    allow("example.org")

    with pytest.raises(OutboundRefused), fetch(client, "GET", httpserver.url_for("/data")):
        pass

    assert httpserver.log == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_fetch__follows_a_redirect_to_an_allowed_host(allow, client, httpserver, status):
    allow("localhost", "127.0.0.1")
    target = f"http://127.0.0.1:{httpserver.port}/final"
    httpserver.expect_request("/start").respond_with_data(
        "", status=status, headers={"Location": target}
    )
    httpserver.expect_request("/final").respond_with_data("arrived")

    with fetch(client, "GET", httpserver.url_for("/start")) as response:
        body = response.read()

    assert response.status_code == 200
    assert body == b"arrived"
    assert str(response.url) == target


def test_fetch__relative_location_is_resolved_against_the_current_url(allow, client, httpserver):
    allow("localhost")
    httpserver.expect_request("/dir/start").respond_with_data(
        "", status=302, headers={"Location": "next?x=1"}
    )
    httpserver.expect_request("/dir/next", query_string="x=1").respond_with_data("relative")

    with fetch(client, "GET", httpserver.url_for("/dir/start")) as response:
        body = response.read()

    assert body == b"relative"


@pytest.mark.parametrize(
    "location",
    ["http://example.com/x", "http://127.0.0.1:{port}/final", "ftp://localhost/x"],
    ids=["other-host", "loopback-ip-not-named", "ftp"],
)
def test_fetch__refuses_a_redirect_to_a_refused_url(allow, client, httpserver, location):
    allow("localhost")
    httpserver.expect_request("/start").respond_with_data(
        "", status=302, headers={"Location": location.format(port=httpserver.port)}
    )
    httpserver.expect_request("/final").respond_with_data("must not be reached")

    with pytest.raises(OutboundRefused), fetch(client, "GET", httpserver.url_for("/start")):
        pass

    assert [request.path for request, _ in httpserver.log] == ["/start"]


def chain(httpserver, hops: int) -> str:
    """Serve /r0 -> /r1 -> ... -> /r<hops>, which answers 200; return the first URL."""
    for n in range(hops):
        httpserver.expect_request(f"/r{n}").respond_with_data(
            "", status=302, headers={"Location": f"/r{n + 1}"}
        )
    httpserver.expect_request(f"/r{hops}").respond_with_data("end of chain")
    return httpserver.url_for("/r0")


def test_fetch__five_redirects_are_followed(allow, client, httpserver):
    allow("localhost")
    start = chain(httpserver, outbound.MAX_REDIRECTS)

    with fetch(client, "GET", start) as response:
        body = response.read()

    assert body == b"end of chain"


def test_fetch__more_than_five_redirects_are_refused(allow, client, httpserver):
    allow("localhost")
    start = chain(httpserver, outbound.MAX_REDIRECTS + 1)

    with pytest.raises(OutboundRefused, match="more than 5 redirects"), fetch(client, "GET", start):
        pass

    assert len(httpserver.log) == outbound.MAX_REDIRECTS + 1


def test_fetch__redirect_loop_is_refused(allow, client, httpserver):
    allow("localhost")
    httpserver.expect_request("/loop").respond_with_data(
        "", status=302, headers={"Location": "/loop"}
    )

    loop = httpserver.url_for("/loop")
    with pytest.raises(OutboundRefused, match="redirects"), fetch(client, "GET", loop):
        pass


def test_fetch__303_turns_a_post_into_a_get_without_its_body(allow, client, httpserver):
    allow("localhost")
    httpserver.expect_request("/form", method="POST").respond_with_data(
        "", status=303, headers={"Location": "/done"}
    )
    httpserver.expect_request("/done", method="GET").respond_with_data("done")

    with fetch(client, "POST", httpserver.url_for("/form"), content=b"a=1") as response:
        body = response.read()

    assert body == b"done"
    second, _ = httpserver.log[1]
    assert second.method == "GET"
    assert second.get_data() == b""


def test_fetch__307_keeps_the_method_and_body(allow, client, httpserver):
    allow("localhost")
    httpserver.expect_request("/hook", method="POST").respond_with_data(
        "", status=307, headers={"Location": "/hook2"}
    )
    httpserver.expect_request("/hook2", method="POST").respond_with_data("kept")

    with fetch(client, "POST", httpserver.url_for("/hook"), content=b'{"a":1}') as response:
        body = response.read()

    assert body == b"kept"
    second, _ = httpserver.log[1]
    assert second.get_data() == b'{"a":1}'


def test_fetch__redirect_to_another_host_drops_the_authorization_header(allow, client, httpserver):
    # As httpx, requests and browsers do: credentials meant for one host are never sent to
    # another host a redirect names.
    allow("localhost", "127.0.0.1")
    httpserver.expect_request("/api").respond_with_data(
        "", status=302, headers={"Location": f"http://127.0.0.1:{httpserver.port}/elsewhere"}
    )
    httpserver.expect_request("/elsewhere").respond_with_data("ok")

    headers = {"Authorization": "Bearer secret-token"}
    with fetch(client, "GET", httpserver.url_for("/api"), headers=headers) as response:
        response.read()

    first, _ = httpserver.log[0]
    second, _ = httpserver.log[1]
    assert first.headers.get("Authorization") == "Bearer secret-token"
    assert second.headers.get("Authorization") is None
