#!/usr/bin/env python
"""Try Gatehouse in a minute: get tokens as the example clinic's agents, and see what was recorded.

After `make run` (which applies examples/clinic.yaml and serves on 127.0.0.1:8000), in another terminal:

    DEBUG=1 .venv/bin/python examples/demo_agent.py

On its first run the demo generates one private key per agent under var/demo_keys/ (never committed) and
registers the matching public keys on the agents through the agent_update service, as the system.  Then:

1. billing-runner (a background agent) gets a client-credentials token with private_key_jwt;
2. voice-assistant acts for the patient alice: authorization code + PKCE with `resource`, alice's consent
   given on the real consent page (the demo signs alice in with a session made in the database: the clinic
   policy gives patients no password), and the code exchanged with private_key_jwt;
3. billing-runner asks for a capability it was never granted, and is refused with invalid_scope;
4. the audit events these steps caused are printed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import secrets
import sys
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BILLING = "https://billing.clinic.example/api"
RECORDS = "https://records.clinic.example/mcp"


def setup_django() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    from django.apps import apps

    if not apps.ready:
        import django

        django.setup()


# --- keys ---------------------------------------------------------------------------------------------
def demo_key(key_dir: Path, agent_name: str):
    """The agent's demo private key, generated once (file mode 0600)."""
    from jwcrypto import jwk

    path = key_dir / f"{agent_name}.jwk.json"
    if not path.exists():
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = jwk.JWK.generate(kty="EC", crv="P-256", kid=f"demo-{agent_name}", use="sig", alg="ES256")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.export_private())
    return jwk.JWK.from_json(path.read_text())


def register_key(agent, key) -> bool:
    """Make the agent's registered JWKS the demo key's public half (once); True when it changed."""
    from audit.services import SYSTEM
    from governance.services import agent_update

    public = json.loads(key.export_public())
    if [k.get("kid") for k in agent.jwks.get("keys", [])] == [public["kid"]]:
        return False
    agent_update(actor=SYSTEM, agent=agent, jwks={"keys": [public]})
    return True


def assertion(key, client_id: str, audience: str) -> dict:
    from jwcrypto import jwt

    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.JWT(header={"alg": "ES256", "kid": key.get("kid")}, claims=claims)
    token.make_signed_token(key)
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": token.serialize()}


# --- printing -------------------------------------------------------------------------------------------
def decode(token: str) -> tuple[dict, dict]:
    def part(text: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    header, payload, _ = token.split(".")
    return part(header), part(payload)


def show_token(out, label: str, body: dict, users: dict) -> dict:
    header, claims = decode(body["access_token"])
    print(f"\n== {label}", file=out)
    print(
        f"   token_type={body['token_type']} expires_in={body['expires_in']} scope={body.get('scope')!r}"
        f"{' (+ refresh token)' if 'refresh_token' in body else ''}",
        file=out,
    )
    print(f"   header: typ={header.get('typ')} alg={header.get('alg')} kid={header.get('kid')}", file=out)
    for name in ("iss", "sub", "client_id", "aud", "scope", "iat", "exp", "jti"):
        note = f"   ← user {users[claims[name]]}" if name == "sub" and claims[name] in users else ""
        print(f"   {name:9} {claims.get(name)}{note}", file=out)
    return claims


def show_events(out, events) -> None:
    print("\n== Audit events this demo caused", file=out)
    for event in events:
        params = json.loads(event.parameters or "{}")
        extra = [f"jti={params['jti']}"] if "jti" in params else []
        if params.get("error"):
            extra.append(f"error={params['error']}")
        if params.get("reason"):
            extra.append(f"reason={params['reason']!r}")
        who = f" for {event.on_behalf_of_label}" if event.on_behalf_of_label else ""
        caps = f" [{event.capabilities}]" if event.capabilities else ""
        print(
            f"   #{event.seq:<5} {event.action:22} {event.result:8} {event.actor_label} → "
            f"{event.agent_label or '-'}{who}{caps} {' '.join(extra)}".rstrip(),
            file=out,
        )


# --- the flows ------------------------------------------------------------------------------------------
class HiddenInputs(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.fields: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""


def signed_in_browser(base_url: str, user):
    """A browser session for ``user``, made in the database (the demo's shortcut around a password)."""
    import httpx
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.utils.module_loading import import_string

    store = import_string(settings.SESSION_ENGINE + ".SessionStore")()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    browser = httpx.Client(base_url=base_url, follow_redirects=False, timeout=20)
    browser.cookies.set(settings.SESSION_COOKIE_NAME, store.session_key)
    return browser


def authorization_code_for(http, meta: dict, agent, key, user, *, base_url: str, out) -> dict:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = agent.application.redirect_uris.split()[0]
    query = urlencode(
        {
            "response_type": "code",
            "client_id": agent.application.client_id,
            "redirect_uri": redirect_uri,
            "scope": "records.read_own appointments.book",
            "state": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": RECORDS,
        }
    )
    browser = signed_in_browser(base_url, user)
    page = browser.get(f"{meta['authorization_endpoint']}?{query}")
    if page.status_code != 200:
        raise SystemExit(f"the consent page did not open ({page.status_code}): {page.text[:300]}")
    print(f"\n== {user.username} opens the consent page for {agent.name} and presses Allow", file=out)
    answer = browser.post(
        f"{meta['authorization_endpoint']}?{query}",
        data={**HiddenInputs(page.text).fields, "allow": "Authorize"},
    )
    callback = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers.get("location", "")).query).items()}
    if "code" not in callback:
        raise SystemExit(f"no authorization code: {callback or answer.text[:300]}")
    print(f"   redirected to {redirect_uri} with a code, state and iss={callback.get('iss')}", file=out)
    response = http.post(
        meta["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "resource": RECORDS,
            "client_id": agent.application.client_id,
            **assertion(key, agent.application.client_id, meta["issuer"]),
        },
    )
    response.raise_for_status()
    return response.json()


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        description="Get tokens from a running Gatehouse as the demo clinic's agents."
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--key-dir", default=str(ROOT / "var" / "demo_keys"))
    opts = parser.parse_args(argv)
    setup_django()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo prints what matters itself

    import httpx

    from audit.models import AuditEvent
    from governance.models import Agent, User

    agents = {
        a.name: a
        for a in Agent.objects.select_related("application").filter(
            name__in=["billing-runner", "voice-assistant"], organization__slug="clinic"
        )
    }
    if len(agents) != 2:
        raise SystemExit("The clinic's agents are missing: run `make run` (it applies examples/clinic.yaml).")
    alice = User.objects.get(username="alice")
    users = {str(alice.pk): "alice"}
    start = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0

    keys = {name: demo_key(Path(opts.key_dir), name) for name in agents}
    for name, agent in agents.items():
        if register_key(agent, keys[name]):
            print(f"registered the demo public key {keys[name].get('kid')} on {name}", file=out)

    with httpx.Client(timeout=20) as http:
        meta = http.get(f"{opts.base_url}/.well-known/oauth-authorization-server").json()
        print(f"issuer {meta['issuer']} · token endpoint {meta['token_endpoint']}", file=out)

        billing = agents["billing-runner"]
        body = http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "client_credentials",
                "scope": "billing.invoice_read billing.invoice_send",
                "resource": BILLING,
                **assertion(keys["billing-runner"], billing.application.client_id, meta["issuer"]),
            },
        )
        body.raise_for_status()
        show_token(out, "billing-runner: client credentials, private_key_jwt", body.json(), users)

        voice = agents["voice-assistant"]
        body = authorization_code_for(
            http, meta, voice, keys["voice-assistant"], alice, base_url=opts.base_url, out=out
        )
        show_token(out, "voice-assistant acting for alice: code + PKCE, private_key_jwt", body, users)

        refused = http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "client_credentials",
                "scope": "billing.invoice_read billing.refund_issue",
                "resource": BILLING,
                **assertion(keys["billing-runner"], billing.application.client_id, meta["issuer"]),
            },
        )
        print("\n== billing-runner asks for billing.refund_issue, which it was never granted", file=out)
        print(f"   HTTP {refused.status_code} {refused.json()}", file=out)

    show_events(out, AuditEvent.objects.filter(seq__gt=start).order_by("seq"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
