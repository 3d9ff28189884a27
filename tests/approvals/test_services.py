"""The request lifecycle: who may decide, M-of-N counting, denials, expiry, the single-use token."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from approvals import policy, services
from approvals.models import ActionRequest, ApprovalDecision, ApprovalNotification, RequestStatus
from approvals.tasks import expire_stale, remind_pending
from audit.actions import Action
from audit.models import AuditEvent
from governance.errors import Conflict, InvalidInput, InvalidState, NotPermitted
from governance.models import Role
from tests.factories import UserFactory
from tests.oauth import helpers


def events(action) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


# --- refusals first -----------------------------------------------------------


def test_an_agent_without_a_grant_for_that_user_cannot_ask(clinic):
    stranger = UserFactory(organization=clinic.org)
    with pytest.raises(NotPermitted, match="no active grant"):
        clinic.ask(on_behalf_of=stranger)
    assert not ActionRequest.objects.exists()


def test_a_suspended_agent_cannot_ask(clinic):
    clinic.agent.status = "suspended"
    clinic.agent.save()
    with pytest.raises(NotPermitted):
        clinic.ask()


def test_a_capability_that_needs_no_approval_is_refused(clinic):
    clinic.cancel.requires_approval, clinic.cancel.approvals_required = False, 0
    clinic.cancel.save()
    with pytest.raises(InvalidInput, match="does not need approval"):
        clinic.ask()


@pytest.mark.parametrize(
    "details",
    [
        [],
        {"type": "appointments.cancel"},
        [{"type": "records.read_own"}],
        [{"appointment_id": "A-1"}],
        ["appointments.cancel"],
        [{"type": "appointments.cancel", "x": "a\x00b"}],
        [{"type": "appointments.cancel", "x": "admin\u202egnp.exe"}],
        [{"type": "appointments.cancel", "x": "line\x1bbreak"}],
        [{"type": "appointments.cancel", "x": "y" * 1001}],
        [{"type": "appointments.cancel", "x": [[[[[[1]]]]]]}],
        [{"type": "appointments.cancel", "x": 2**60}],
        [{"type": "appointments.cancel", "x": float("nan")}],
        [{"type": "appointments.cancel", "bad key!": 1}],
        [{"type": "appointments.cancel", "x": "z" * 900, "y": "z" * 900}] * 6,
    ],
)
def test_hostile_or_misshapen_authorization_details_are_refused(clinic, details):
    with pytest.raises(InvalidInput):
        clinic.ask(authorization_details=details)
    assert not ActionRequest.objects.exists()


@pytest.mark.parametrize("message", ["a\x00b", "x" * 257, "\u2066hidden\u2069", 42])
def test_hostile_binding_messages_are_refused(clinic, message):
    with pytest.raises(InvalidInput):
        clinic.ask(binding_message=message)


def test_a_binding_message_is_trimmed_and_its_line_breaks_folded(clinic):
    assert clinic.ask(binding_message="  Cancel\n Tuesday\t10:00 ").binding_message == "Cancel Tuesday 10:00"


def test_too_few_eligible_approvers_refuses_the_request(clinic):
    clinic.cancel.approvals_required = 4
    clinic.cancel.save()
    with pytest.raises(InvalidState, match="Too few people"):
        clinic.ask()
    assert not ActionRequest.objects.exists()


def test_nobody_outside_the_policy_may_decide(clinic):
    request = clinic.ask()
    for outsider in (clinic.pat, clinic.admin, UserFactory(organization=clinic.org)):
        with pytest.raises(NotPermitted):
            services.action_request_approve(actor=outsider, action_request=request)
    assert not ApprovalDecision.objects.exists()


def test_the_agents_owner_is_excluded_when_the_policy_says_so(clinic):
    clinic.cancel.approver_role = Role.ADMIN
    clinic.cancel.exclude_agent_owner = True
    clinic.cancel.approvals_required = 1
    clinic.cancel.save()
    request = clinic.ask()
    assert set(request.approvers.all()) == {clinic.admin2}
    with pytest.raises(NotPermitted):
        services.action_request_approve(actor=clinic.admin, action_request=request)


def test_the_on_behalf_of_user_approves_only_when_the_policy_says_so(clinic):
    clinic.pat.role = Role.APPROVER
    clinic.pat.save()
    assert clinic.pat not in clinic.ask().approvers.all()  # an approver by role, but the beneficiary
    clinic.cancel.on_behalf_of_may_approve = True
    clinic.cancel.save()
    request = clinic.ask(authorization_details=clinic.details(appointment_id="A-2"))
    assert clinic.pat in request.approvers.all()


def test_named_approvers_join_the_role(clinic):
    nurse = UserFactory(organization=clinic.org, username="nurse")
    clinic.cancel.named_approvers.set([nurse])
    assert nurse in clinic.ask().approvers.all()


def test_a_person_who_lost_the_role_can_no_longer_decide(clinic):
    request = clinic.ask()
    clinic.ravi.role = Role.MEMBER
    clinic.ravi.save()
    with pytest.raises(NotPermitted):
        services.action_request_approve(actor=clinic.ravi, action_request=request)


def test_approving_twice_counts_once(clinic):
    request = clinic.ask()
    services.action_request_approve(actor=clinic.ravi, action_request=request)
    with pytest.raises(Conflict, match="counts once"):
        services.action_request_approve(actor=clinic.ravi, action_request=request)
    request.refresh_from_db()
    assert (request.status, request.approvals_received) == (RequestStatus.PENDING, 1)
    assert ApprovalDecision.objects.filter(request=request).count() == 1


def test_an_expired_request_takes_no_decision(clinic):
    request = clinic.ask()
    ActionRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(InvalidState, match="expired"):
        services.action_request_approve(actor=clinic.ravi, action_request=request)


# --- what works -----------------------------------------------------------


def test_m_of_n_two_approvals_of_three_approve(clinic):
    request = clinic.ask()
    assert set(request.approvers.all()) == {clinic.ravi, clinic.mei, clinic.ali}
    first = services.action_request_approve(actor=clinic.ravi, action_request=request, reason="ok")
    assert (first.status, first.approvals_needed) == (RequestStatus.PENDING, 1)
    second = services.action_request_approve(actor=clinic.mei, action_request=request)
    assert (second.status, second.approvals_needed) == (RequestStatus.APPROVED, 0)
    assert second.decided_at is not None
    with pytest.raises(InvalidState, match="already approved"):
        services.action_request_approve(actor=clinic.ali, action_request=request)
    approvals = events(Action.APPROVAL_APPROVED)
    assert [json.loads(e.parameters)["complete"] for e in approvals] == [False, True]


def test_one_denial_ends_the_request_by_default(clinic):
    request = clinic.ask()
    services.action_request_approve(actor=clinic.ravi, action_request=request)
    denied = services.action_request_deny(actor=clinic.mei, action_request=request, reason="patient said no")
    assert denied.status == RequestStatus.DENIED
    with pytest.raises(InvalidState):
        services.action_request_approve(actor=clinic.ali, action_request=request)


def test_when_denials_do_not_end_it_the_request_ends_only_once_the_count_is_out_of_reach(clinic):
    clinic.cancel.tolerate_denials = True
    clinic.cancel.save()
    request = clinic.ask()
    assert (
        services.action_request_deny(actor=clinic.ravi, action_request=request).status
        == RequestStatus.PENDING
    )
    assert (
        services.action_request_approve(actor=clinic.mei, action_request=request).status
        == RequestStatus.PENDING
    )
    assert (
        services.action_request_approve(actor=clinic.ali, action_request=request).status
        == RequestStatus.APPROVED
    )

    other = clinic.ask(authorization_details=clinic.details(appointment_id="A-2"))
    services.action_request_deny(actor=clinic.ravi, action_request=other)
    assert services.action_request_deny(actor=clinic.mei, action_request=other).status == RequestStatus.DENIED


def test_every_transition_is_one_audit_event(clinic):
    request = clinic.ask()
    assert len(events(Action.APPROVAL_REQUESTED)) == 1
    services.action_request_cancel(actor=clinic.agent, action_request=request, reason="patient called")
    assert len(events(Action.APPROVAL_CANCELLED)) == 1
    with pytest.raises(InvalidState):
        services.action_request_cancel(actor=clinic.agent, action_request=request)


def test_another_agent_cannot_cancel(clinic):
    other, _ = helpers.make_agent(organization=clinic.org, owner=clinic.admin, ceiling=[clinic.cancel])
    request = clinic.ask()
    with pytest.raises(NotPermitted):
        services.action_request_cancel(actor=other, action_request=request)
    with pytest.raises(NotPermitted):
        services.action_request_cancel(actor=clinic.ravi, action_request=request)


def test_stale_requests_expire_and_approved_unused_ones_too(clinic):
    pending = clinic.ask()
    approved = clinic.ask(authorization_details=clinic.details(appointment_id="A-2"))
    services.action_request_approve(actor=clinic.ravi, action_request=approved)
    services.action_request_approve(actor=clinic.mei, action_request=approved)
    fresh = clinic.ask(authorization_details=clinic.details(appointment_id="A-3"))
    past = timezone.now() - timedelta(seconds=1)
    ActionRequest.objects.filter(pk__in=[pending.pk, approved.pk]).update(expires_at=past)

    assert expire_stale() == 2
    assert ActionRequest.objects.get(pk=pending.pk).status == RequestStatus.EXPIRED
    assert ActionRequest.objects.get(pk=approved.pk).status == RequestStatus.EXPIRED
    assert ActionRequest.objects.get(pk=fresh.pk).status == RequestStatus.PENDING
    assert expire_stale() == 0
    assert len(events(Action.APPROVAL_EXPIRED)) == 2


def test_requested_expiry_can_only_shorten_the_wait(clinic):
    request = clinic.ask(requested_expiry=120)
    assert request.expires_at - request.created_at < timedelta(seconds=125)
    longer = clinic.ask(requested_expiry=10**7, authorization_details=clinic.details(appointment_id="A-2"))
    assert longer.expires_at - longer.created_at <= timedelta(
        seconds=clinic.cancel.approval_expiry_seconds + 1
    )


def test_the_token_is_issued_once_and_used_once(clinic):
    request = clinic.ask()
    with pytest.raises(InvalidState):
        services.action_request_token_issued(actor=clinic.agent, action_request=request, jti="j1")
    services.action_request_approve(actor=clinic.ravi, action_request=request)
    services.action_request_approve(actor=clinic.mei, action_request=request)
    other, _ = helpers.make_agent(organization=clinic.org, owner=clinic.admin, ceiling=[clinic.cancel])
    with pytest.raises(NotPermitted):
        services.action_request_token_issued(actor=other, action_request=request, jti="j1")
    services.action_request_token_issued(actor=clinic.agent, action_request=request, jti="j1")
    with pytest.raises(InvalidState, match="already issued"):
        services.action_request_token_issued(actor=clinic.agent, action_request=request, jti="j2")
    used = services.action_request_mark_used(actor=clinic.agent, action_request=request)
    assert used.status == RequestStatus.USED and used.used_at is not None
    with pytest.raises(InvalidState):
        services.action_request_mark_used(actor=clinic.agent, action_request=request)
    assert [len(events(a)) for a in (Action.APPROVAL_TOKEN_ISSUED, Action.APPROVAL_TOKEN_USED)] == [1, 1]


def test_polls_faster_than_the_interval_are_told_to_slow_down(clinic):
    request = clinic.ask(poll_interval=5)
    assert services.action_request_register_poll(action_request=request) is True
    assert services.action_request_register_poll(action_request=request) is False
    request.refresh_from_db()
    assert request.poll_interval == 10  # slow_down adds 5 s (OpenID CIBA Core §11)
    ActionRequest.objects.filter(pk=request.pk).update(last_polled_at=timezone.now() - timedelta(seconds=6))
    assert services.action_request_register_poll(action_request=request) is False
    request.refresh_from_db()
    ActionRequest.objects.filter(pk=request.pk).update(last_polled_at=timezone.now() - timedelta(seconds=16))
    assert services.action_request_register_poll(action_request=request) is True
    ActionRequest.objects.filter(pk=request.pk).update(poll_interval=58, last_polled_at=timezone.now())
    request.refresh_from_db()
    assert services.action_request_register_poll(action_request=request) is False
    request.refresh_from_db()
    assert request.poll_interval == services.MAX_POLL_INTERVAL  # never more than a minute


def test_one_outbox_row_per_approver_is_written_with_the_request_and_sent_after_commit(
    clinic, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        request = clinic.ask()
    rows = ApprovalNotification.objects.filter(request=request)
    assert {r.recipient for r in rows} == {clinic.ravi, clinic.mei, clinic.ali}
    assert {r.state for r in rows} == {"pending"} and mail.outbox == []  # nothing leaves before commit
    for callback in callbacks:
        callback()  # eager Celery in this test
    assert {r.state for r in rows.all()} == {"sent"}
    assert len(mail.outbox) == 3


def test_a_reminder_goes_once_to_those_who_have_not_decided(clinic, django_capture_on_commit_callbacks):
    request = clinic.ask()
    services.action_request_approve(actor=clinic.ravi, action_request=request)
    mail.outbox = []
    ActionRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() + timedelta(seconds=60))
    with django_capture_on_commit_callbacks(execute=True):
        assert remind_pending() == 1
    assert remind_pending() == 0
    assert sorted(m.to[0] for m in mail.outbox) == sorted([clinic.mei.email, clinic.ali.email])
    assert all(m.subject.startswith("Reminder") for m in mail.outbox)


def test_policy_eligibility_is_one_rule(clinic):
    request = clinic.ask()
    assert policy.may_decide(clinic.ravi, request)
    assert not policy.may_decide(clinic.pat, request)
