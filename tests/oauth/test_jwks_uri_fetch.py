"""The one fetcher of a client's ``jwks_uri`` (blind SSRF, issue 9 defect 6), against a local HTTP server:
fetches are counted, failures cached, loopback and private targets refused outside DEBUG, redirects and
oversized answers refused."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.cache import cache

from governance.oauth import client_auth
from governance.oauth.client_auth import AssertionRejected, _fetch_jwks, jwks_uri_refusal
from tests.oauth import helpers

PORT = 19117
JWKS = helpers.public_jwks(helpers.new_key())


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{PORT}/jwks")
            self.end_headers()
            return
        if self.path == "/broken":
            self.send_response(500)
            self.end_headers()
            return
        body = json.dumps(JWKS).encode()
        if self.path == "/huge":
            body = b'{"keys": [], "pad": "' + b"x" * (client_auth.MAX_JWKS_BYTES + 10) + b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", PORT), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.hits = {}
    yield f"http://127.0.0.1:{PORT}"
    httpd.shutdown()
    httpd.server_close()


def _forget(uri):
    key = "gh:client-jwks:" + hashlib.sha256(uri.encode()).hexdigest()
    cache.delete_many([key, key + ":fetched", key + ":failed"])


def test_a_good_jwks_is_fetched_once_and_cached(server, settings):
    settings.DEBUG = True
    uri = f"{server}/jwks"
    _forget(uri)
    assert _fetch_jwks(uri) == JWKS and _fetch_jwks(uri) == JWKS
    assert _Handler.hits["/jwks"] == 1


def test_failures_are_cached_so_a_bad_uri_is_not_fetched_at_every_authentication(server, settings):
    settings.DEBUG = True
    uri = f"{server}/broken"
    _forget(uri)
    for _ in range(5):
        with pytest.raises(AssertionRejected):
            _fetch_jwks(uri)
        with pytest.raises(AssertionRejected):
            _fetch_jwks(uri, force=True)
    assert _Handler.hits["/broken"] == 1


def test_redirects_and_oversized_answers_are_refused(server, settings):
    settings.DEBUG = True
    for path in ("/redirect", "/huge"):
        _forget(server + path)
        with pytest.raises(AssertionRejected):
            _fetch_jwks(server + path)
    assert "/jwks" not in _Handler.hits  # the redirect was never followed


def test_outside_debug_loopback_private_and_http_targets_are_never_fetched(server, settings):
    settings.DEBUG = False
    uri = f"{server}/jwks"
    _forget(uri)
    with pytest.raises(AssertionRejected):
        _fetch_jwks(uri)
    assert _Handler.hits == {}
    for target in (
        "https://127.0.0.1/jwks",
        "https://localhost/jwks",
        "https://[::1]/jwks",
        "https://10.0.0.5/jwks",
        "https://192.168.1.1/jwks",
        "https://169.254.169.254/latest/meta-data",
        "https://224.0.0.1/jwks",
        "https://[fe80::1]/jwks",
        "http://93.184.216.34/jwks",
        "https://user:pw@93.184.216.34/jwks",
        "ftp://93.184.216.34/jwks",
    ):
        assert jwks_uri_refusal(target) is not None, target
    assert jwks_uri_refusal("https://93.184.216.34/jwks") is None  # a public address (not fetched here)


@pytest.mark.django_db(transaction=True)
def test_token_requests_fetch_a_failing_jwks_uri_once_and_an_unsafe_one_never(
    server, settings, issuer, http, world
):
    """Over HTTP, as the defect was found: repeated client authentications against a ``jwks_uri`` that
    fails fetch it once (the failure is cached); outside DEBUG a loopback ``jwks_uri`` is never fetched."""
    agent, key = world.background_agent()
    helpers.grant(agent, world.read)

    def authenticate(path: str) -> None:
        uri = f"{server}{path}"
        _forget(uri)
        type(agent).objects.filter(pk=agent.pk).update(jwks={}, jwks_uri=uri)
        for _ in range(4):
            data = {"grant_type": "client_credentials", "scope": "records.read_own"}
            data["resource"] = world.records.audience
            data.update(helpers.assertion_params(key, agent.application.client_id, f"{issuer}/oauth/token/"))
            response = http.post(f"{issuer}/oauth/token/", data=data)
            assert response.status_code == 401 and response.json()["error"] == "invalid_client"

    settings.DEBUG = True
    authenticate("/broken")
    assert _Handler.hits == {"/broken": 1}
    settings.DEBUG = False
    authenticate("/private")
    assert "/private" not in _Handler.hits
