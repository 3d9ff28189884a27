"""Who may approve what: the approval policy, stated once.

An agent's request (kind ``action``) follows its capability's policy: everyone with ``approver_role`` in the
organization, plus the ``named_approvers``, plus the on-behalf-of user when ``on_behalf_of_may_approve``;
minus the agent's owner when ``exclude_agent_owner``, and minus the on-behalf-of user otherwise.
A permission change (kind ``grant``) is approved by another admin of the organization: never the admin who
asked, never the person receiving the grant.  Only active people of the request's organization count.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from approvals.models import ActionRequest, RequestKind
from audit.services import Actor
from governance import auth_levels
from governance.models import Capability, RiskLevel, Role, User

# Granting one of these by hand needs a second admin (issue 11 item 7).
SECOND_ADMIN_RISK_LEVELS = frozenset({RiskLevel.HIGH, RiskLevel.CRITICAL})


def eligible_approvers(action_request: ActionRequest) -> QuerySet[User]:
    """The people who may decide this request under the policy as it stands now."""
    people = User.objects.filter(organization_id=action_request.organization_id, is_active=True)
    excluded = {action_request.requested_by_id}
    if action_request.kind == RequestKind.GRANT:
        allowed = Q(role=Role.ADMIN)
        excluded.add(action_request.on_behalf_of_id)
    else:
        capability = action_request.capability
        allowed = Q(pk__in=capability.named_approvers.values("pk"))
        if capability.approver_role:
            allowed |= Q(role=capability.approver_role)
        if action_request.on_behalf_of_id is not None:
            if capability.on_behalf_of_may_approve:
                allowed |= Q(pk=action_request.on_behalf_of_id)
            else:
                excluded.add(action_request.on_behalf_of_id)
        if capability.exclude_agent_owner:
            excluded.add(action_request.agent.owner_id)
    excluded.discard(None)
    return people.filter(allowed).exclude(pk__in=excluded).order_by("pk")


def may_decide(user: User, action_request: ActionRequest) -> bool:
    """Assigned when the request was made, and still eligible now (role, activity, policy)."""
    if not user.is_authenticated or not user.is_active:
        return False
    return (
        action_request.approvers.filter(pk=user.pk).exists()
        and eligible_approvers(action_request).filter(pk=user.pk).exists()
    )


def needs_step_up(action_request: ActionRequest) -> bool:
    """Deciding needs a fresh second factor: the capability asks for it, or it is a high-risk grant."""
    capability = action_request.capability
    if action_request.kind == RequestKind.GRANT:
        return auth_levels.granting_needs_step_up(capability) or capability.requires_step_up
    return capability.requires_step_up


def grant_needs_second_admin(*, actor: User | Actor, capability: Capability) -> bool:
    """A person granting a high- or critical-risk capability needs another admin's approval first.

    System actors (a policy file applied from the command line, a scheduled job) are not asked: a policy
    file is reviewed where it is kept (version control), and the command line is an operator's own
    (docs/approvals.md).
    """
    return isinstance(actor, User) and capability.risk_level in SECOND_ADMIN_RISK_LEVELS
