"""End to end with the real pieces: a Celery worker process over Redis, an SMTP server on loopback (aiosmtpd),
the portal over HTTP.  The email arrives, a signed-in approver follows its link and approves with a POST;
and a worker killed (SIGKILL) in the middle of sending is replaced and the email arrives exactly once.

Needs PostgreSQL (the worker shares the test database) and REDIS_URL; ports 18510 (SMTP) and 18520 (HTTP).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.db import connection

from approvals.models import ActionRequest, ApprovalNotification, RequestStatus
from approvals.tasks import resend_unsent
from config.celery import app as celery_app
from tests.approvals.conftest import SECRET
from tests.enforcement.conftest import Caller, evaluation
from tests.oauth import helpers

SMTP_PORT = 18510
HTTP_PORT = 18520
BASE = f"http://127.0.0.1:{HTTP_PORT}"
PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory
LINK = re.compile(rf"{re.escape(BASE)}(/portal/approvals/link/[A-Za-z0-9_-]+/)")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (.ci/run sets it)"),
    pytest.mark.django_db(transaction=True),
]


class Recorder:
    """Accepts mail and keeps it; can hold the next message (no reply) until released, then refuse it."""

    def __init__(self):
        self.accepted: list[str] = []
        self.hold_next = False
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        if self.hold_next:
            self.hold_next = False
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 Try again later"
        self.accepted.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.accepted) >= count, f"{len(self.accepted)} of {count} emails arrived in {timeout} s"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def smtp():
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    yield recorder
    recorder.release.set()
    controller.stop()


@pytest.fixture
def portal(settings):
    settings.GATEHOUSE_ISSUER = BASE
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    server = ThreadedWSGIServer(("127.0.0.1", HTTP_PORT), QuietHandler, allow_reuse_address=True)
    server.daemon_threads = True
    server.set_app(get_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield BASE
    server.shutdown()
    server.server_close()


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """`celery worker` subprocesses on the default queue of this test's Redis database."""

    def __init__(self):
        self.env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(SMTP_PORT),
            "EMAIL_TIMEOUT": "30",
            "GATEHOUSE_ISSUER": BASE,
            "GATEHOUSE_APPROVAL_MAIL_LEASE_SECONDS": "2",
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "warning",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def worker(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    celery_app.control.purge()  # this test's Redis database only (REDIS_URL)
    running = Worker()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def one_approver(clinic):
    """ravi alone may approve, and one approval is enough."""
    clinic.cancel.approver_role = ""
    clinic.cancel.approvals_required = 1
    clinic.cancel.save()
    clinic.cancel.named_approvers.set([clinic.ravi])
    return clinic


def sign_in(http: httpx.Client, username: str) -> None:
    page = http.get("/portal/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    done = http.post(
        "/portal/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert done.status_code == 302, done.text


def test_the_email_arrives_and_its_link_approves_over_http(one_approver, smtp, portal, worker):
    clinic = one_approver
    with httpx.Client(base_url=BASE, timeout=30, auth=(clinic.agent.application.client_id, SECRET)) as agent:
        created = agent.post(
            "/api/approvals/requests/",
            json={
                "capability": "appointments.cancel",
                "login_hint": "pat",
                "authorization_details": clinic.details(),
                "binding_message": "Cancel Tuesday 10:00",
            },
        )
    assert created.status_code == 201, created.text

    smtp.wait_for(1)
    assert "ravi@example.test" in smtp.accepted[0]
    path = LINK.search(smtp.accepted[0].replace("=\r\n", "").replace("=\n", "")).group(1)

    with httpx.Client(base_url=BASE, timeout=30) as browser:
        assert browser.get(path).status_code == 302  # sign in first
        sign_in(browser, "ravi")
        page = browser.get(path)
        assert page.status_code == 200 and "appointments.cancel" in page.text
        request = ActionRequest.objects.get(public_id=created.json()["id"])
        assert request.status == RequestStatus.PENDING  # opening decided nothing
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        assert browser.post(path, data={"decision": "approve"}).status_code == 403  # no CSRF token
        decided = browser.post(path, data={"decision": "approve", "csrfmiddlewaretoken": token})
        assert decided.status_code == 302, decided.text
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED


def test_a_worker_killed_mid_send_is_replaced_and_the_email_arrives_exactly_once(
    one_approver, smtp, portal, worker
):
    smtp.hold_next = True
    request = one_approver.ask()  # committed (transactional test): the send task goes to Redis
    assert smtp.holding.wait(60), "the worker never started sending"
    worker.kill()  # mid-conversation: the server has not accepted the message
    smtp.release.set()
    row = ApprovalNotification.objects.get(request=request)
    assert row.state == "sending" and smtp.accepted == []

    worker.start()
    deadline = time.monotonic() + 60
    while not smtp.accepted and time.monotonic() < deadline:
        resend_unsent.apply_async()  # what the beat job does every 30 s
        time.sleep(1.5)
    smtp.wait_for(1)
    for _ in range(3):  # later sweeps find nothing due
        resend_unsent.apply_async()
        time.sleep(1)
    assert len(smtp.accepted) == 1
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("sent", 2)


def test_a_ciba_poll_receives_the_token_once_the_emailed_link_approves(
    one_approver, smtp, portal, worker, settings
):
    """CIBA end to end: backchannel request, email through the worker, approval by the link's POST, the
    agent's poll receives the single-use token, and the decision API accepts it exactly once."""
    clinic = one_approver
    settings.GATEHOUSE_RATE_LIMIT_REDIS_URL = ""  # use-once is the request's, not a counter's
    with httpx.Client(base_url=BASE, timeout=30, auth=(clinic.agent.application.client_id, SECRET)) as agent:
        started = agent.post(
            "/oauth/bc-authorize/",
            data={
                "scope": "appointments.cancel",
                "login_hint": "pat",
                "authorization_details": json.dumps(clinic.details()),
                "binding_message": "Cancel Tuesday 10:00",
            },
        )
        assert started.status_code == 200, started.text
        auth_req_id = started.json()["auth_req_id"]
        poll = {"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": auth_req_id}
        assert agent.post("/oauth/token/", data=poll).json()["error"] == "authorization_pending"

        smtp.wait_for(1)
        path = LINK.search(smtp.accepted[0].replace("=\r\n", "").replace("=\n", "")).group(1)
        with httpx.Client(base_url=BASE, timeout=30) as browser:
            sign_in(browser, "ravi")
            page = browser.get(path)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            decided = browser.post(path, data={"decision": "approve", "csrfmiddlewaretoken": token})
            assert decided.status_code == 302, decided.text

        ActionRequest.objects.filter(status=RequestStatus.APPROVED).update(last_polled_at=None)  # no waiting
        issued = agent.post("/oauth/token/", data=poll)
        assert issued.status_code == 200, issued.text
        access_token = issued.json()["access_token"]
        assert agent.post("/oauth/token/", data=poll).json()["error"] in {"invalid_grant", "slow_down"}

    server = clinic.cancel.tool_server
    with httpx.Client(timeout=30) as http:
        records = Caller(http, BASE, server, key=helpers.make_tool_server_client(server, owner=clinic.admin))
        body = evaluation(access_token, "appointments.cancel", {"appointment_id": "A-1"})
        assert records.evaluate(body).json()["decision"] is True
        assert records.evaluate(body).json()["decision"] is False
    assert ActionRequest.objects.get().status == RequestStatus.USED
