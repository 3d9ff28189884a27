"""Screenshots of the main pages for docs/screenshots/: `make screenshots` (skipped in the normal run).

The demo clinic (examples/clinic.yaml) is applied to the live server's database, with a little activity.
"""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from oauth2_provider.models import get_access_token_model

from approvals.services import grant_request_create
from audit import services as audit
from audit.actions import Action, Result
from governance.models import Agent, Capability, Organization, TokenRecord, User
from tests.browser.conftest import sign_in
from tests.governance.step_up_helpers import code_for

OUT = os.environ.get("GATEHOUSE_SCREENSHOTS", "")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not OUT, reason="screenshots only on request: make screenshots"),
]


@pytest.fixture
def clinic(transactional_db):
    call_command("policy", "apply", str(ROOT / "examples" / "clinic.yaml"), stdout=io.StringIO())
    for username in ("dana", "alice"):
        user = User.objects.get(username=username)
        user.set_password("correct horse battery staple")
        user.save()
    org = Organization.objects.get(slug="clinic")
    voice = Agent.objects.get(name="voice-assistant")
    support = Agent.objects.get(name="support-assistant")
    alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
    with transaction.atomic():
        for user in (alice, bob, alice):
            audit.record(
                action=Action.DECISION_ALLOWED,
                actor=voice,
                agent=voice,
                on_behalf_of=user,
                organization=org,
                capabilities=["records.read_own"],
            )
        audit.record(
            action=Action.DECISION_DENIED,
            result=Result.DENIED,
            actor=support,
            agent=support,
            on_behalf_of=bob,
            organization=org,
            capabilities=["appointments.cancel"],
            parameters={"reason": "approval_required"},
        )
        audit.record(
            action=Action.ELEVATION_ATTEMPTED,
            result=Result.DENIED,
            actor=voice,
            agent=voice,
            on_behalf_of=alice,
            organization=org,
            capabilities=["prescriptions.request"],
        )
    now = timezone.now()
    server = voice.ceiling.first().tool_server
    for n, user in enumerate((alice, bob)):
        token = get_access_token_model().objects.create(
            user=user,
            application=voice.application,
            token=f"screenshot-{n}",
            scope="records.read_own",
            expires=now + timedelta(minutes=4),
        )
        TokenRecord.objects.create(
            access_token=token,
            jti=f"3f9c2a7e-{n}1b4-4c1e-9d2a-7b8e0c{n}",
            audience=server.audience,
            tool_server=server,
            agent=voice,
            user=user,
            subject=str(user.pk),
            client_id=voice.application.client_id,
            capabilities="records.read_own",
            grant_type="authorization_code",
            cnf_jkt="jkt" if n else "",
            issued_at=now,
            expires_at=now + timedelta(minutes=4),
        )
    # Ravi (an approver) asks for a critical grant: it waits for Dana, the other admin, in her inbox.
    ravi = User.objects.get(username="ravi")
    ravi.role, ravi.is_staff = "admin", True
    ravi.save()
    grant_request_create(
        actor=ravi,
        agent=support,
        capability=Capability.objects.get(key="prescriptions.request"),
        user=User.objects.get(username="bob"),
        reason="repeat prescriptions while on leave",
    )
    return {"voice": voice, "support": support}


def shoot(page, name: str) -> None:
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def test_screenshots(page, clinic):
    voice, support = clinic["voice"], clinic["support"]
    page.goto("/portal/login/")
    shoot(page, "login")
    sign_in(page, "dana")
    page.goto("/portal/dashboard/")
    shoot(page, "dashboard")
    page.goto("/portal/agents/")
    shoot(page, "agents")
    page.goto(f"/portal/agents/{voice.pk}/")
    shoot(page, "agent")
    page.goto(f"/portal/grants/new/?agent={support.pk}")
    shoot(page, "grant")
    page.goto(f"/portal/agents/{support.pk}/ceiling/")
    page.get_by_label("prescriptions.request on Records").uncheck()
    page.get_by_role("button", name="Preview").click()
    shoot(page, "ceiling-preview")
    # The kill switch asks for a fresh second factor first; the screenshot is of the page after it.
    device = TOTPDevice.objects.create(user=User.objects.get(username="dana"), name="phone", confirmed=True)
    page.goto(f"/portal/agents/{voice.pk}/suspend/")
    page.get_by_label("Code").fill(code_for(device))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"**/portal/agents/{voice.pk}/suspend/")
    shoot(page, "suspend")
    page.goto("/portal/audit/")
    shoot(page, "audit-search")
    page.goto("/portal/approvals/")
    shoot(page, "inbox")
    page.goto("/admin/")
    shoot(page, "admin")
    page.goto("/portal/no-such-page/")
    shoot(page, "not-found")

    page.context.clear_cookies()
    sign_in(page, "alice")
    shoot(page, "my-agents")
    page.goto("/portal/dashboard/")
    shoot(page, "forbidden")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/portal/")
    shoot(page, "my-agents-mobile")

    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="dark")
    page.context.clear_cookies()
    sign_in(page, "dana")
    page.goto(f"/portal/agents/{voice.pk}/")
    shoot(page, "agent-dark")
