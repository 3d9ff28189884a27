"""Every audit action, one enum of stable dotted names.  Never rename a value: old events keep it.

The database column has no choices (``record()`` checks values against this enum), so adding a value needs
no migration.
"""

from django.db import models


class Action(models.TextChoices):
    ORGANIZATION_CREATED = "organization.created"
    ORGANIZATION_UPDATED = "organization.updated"

    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_ROLE_CHANGED = "user.role_changed"
    USER_DEACTIVATED = "user.deactivated"

    AGENT_CREATED = "agent.created"
    AGENT_UPDATED = "agent.updated"
    AGENT_ACTIVATED = "agent.activated"
    AGENT_SUSPENDED = "agent.suspended"
    AGENT_REACTIVATED = "agent.reactivated"
    AGENT_RETIRED = "agent.retired"
    AGENT_CEILING_CHANGED = "agent.ceiling_changed"
    AGENT_KEYS_CHANGED = "agent.keys_changed"

    TOOL_SERVER_CREATED = "tool_server.created"
    TOOL_SERVER_UPDATED = "tool_server.updated"
    # policy: the credentials a tool server authenticates with (never the secret itself)
    TOOL_SERVER_CREDENTIALS_SET = "tool_server.credentials_set"
    TOOL_SERVER_SECRET_ISSUED = "tool_server.secret_issued"

    CAPABILITY_CREATED = "capability.created"
    CAPABILITY_UPDATED = "capability.updated"

    GRANT_CREATED = "grant.created"
    GRANT_RENEWED = "grant.renewed"
    GRANT_REVOKED = "grant.revoked"

    POLICY_APPLIED = "policy.applied"
    POLICY_REFUSED = "policy.refused"

    TOKEN_ISSUED = "token.issued"
    TOKEN_REFRESHED = "token.refreshed"
    TOKEN_REFUSED = "token.refused"
    TOKEN_REVOKED = "token.revoked"
    TOKEN_EXCHANGED = "token.exchanged"
    TOKEN_REUSE_DETECTED = "token.reuse_detected"
    TOKEN_INTROSPECTED = "token.introspected"
    ELEVATION_ATTEMPTED = "elevation.attempted"
    CLIENT_REGISTERED = "client.registered"
    INITIAL_ACCESS_TOKEN_CREATED = "initial_access_token.created"
    SIGNING_KEY_ROTATED = "signing_key.rotated"
    SIGNING_KEY_RETIRED = "signing_key.retired"
    CONSENT_GIVEN = "consent.given"
    CONSENT_DENIED = "consent.denied"
    DPOP_PROOF_REFUSED = "dpop.proof_refused"
    STEP_UP_REQUIRED = "step_up.required"
    STEP_UP_COMPLETED = "step_up.completed"
    MFA_ENROLLED = "mfa.enrolled"
    MFA_CONFIRMED = "mfa.confirmed"
    MFA_REMOVED = "mfa.removed"

    # harden (issue 9): sign-in attempts, recovery codes, first-device notice
    SIGN_IN_SUCCEEDED = "sign_in.succeeded"
    SIGN_IN_FAILED = "sign_in.failed"
    SIGN_IN_LOCKED_OUT = "sign_in.locked_out"
    MFA_RECOVERY_CODES_GENERATED = "mfa.recovery_codes_generated"

    DECISION_ALLOWED = "decision.allowed"
    DECISION_DENIED = "decision.denied"
    # enforcement: a decision request from a caller that is not a registered tool server (no decision made)
    DECISION_CALLER_REFUSED = "decision.caller_refused"

    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_DECIDED = "approval.decided"
    APPROVAL_EXPIRED = "approval.expired"
    # Approvals (the approvals app): each request's life, its emails and links, its single-use token.
    APPROVAL_REFUSED = "approval.refused"
    APPROVAL_NOTIFIED = "approval.notified"
    APPROVAL_REMINDED = "approval.reminded"
    APPROVAL_LINK_OPENED = "approval.link_opened"
    APPROVAL_LINK_REFUSED = "approval.link_refused"
    APPROVAL_APPROVED = "approval.approved"
    APPROVAL_DENIED = "approval.denied"
    APPROVAL_CANCELLED = "approval.cancelled"
    APPROVAL_TOKEN_ISSUED = "approval.token_issued"
    APPROVAL_TOKEN_USED = "approval.token_used"

    # The OAuth edge (edge): refusals of one unauthenticated address beyond the per-minute budget, counted.
    TOKEN_REFUSALS_SUMMARISED = "token.refusals_summarised"

    # Audit search (audit-search): an auditor or admin exported the log (the filters are the parameters).
    AUDIT_EXPORTED = "audit.exported"


class Result(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class ActorType(models.TextChoices):
    USER = "user"
    AGENT = "agent"
    TOOL_SERVER = "tool_server"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"
