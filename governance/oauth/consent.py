"""The consent page of the authorization endpoint (DOT's AuthorizationView, with Gatehouse's rules).

The page names the agent, the tool server (from RFC 8707 ``resource``) and each capability asked, with
what consent can and cannot give.  Only a POST decides, and the POST is checked again from scratch: the
hidden fields of the form are the client's words, not facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django import forms
from django.conf import settings
from django.shortcuts import render
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.forms import AllowForm
from oauth2_provider.models import get_application_model

from config import csp
from governance import auth_levels
from governance.errors import GovernanceError
from governance.mfa.guards import prompt_for
from governance.models import Agent, Capability, ToolServer
from governance.models.agents import AgentKind
from governance.oauth import refusals, state, step_up
from governance.oauth.scoping import evaluate_request, parse_scope, resolve_audience
from governance.oauth.views import AuthorizationView
from governance.services.consent import authorization_refuse, consent_deny, grant_consent, needs_approver

GRANTED = "granted"
CONSENT = "consent"
OUTSIDE_CEILING = "outside_ceiling"
NEEDS_APPROVER = "needs_approver"
UNKNOWN = "unknown"

STATUS_TEXT = {
    GRANTED: "Already granted",
    CONSENT: "Will be granted if you allow",
    OUTSIDE_CEILING: "Not allowed: outside what this agent may ever hold",
    NEEDS_APPROVER: "Needs an approver: not granted by your consent",
    UNKNOWN: "Not allowed: not a capability of this tool server",
}


@dataclass
class CapabilityLine:
    key: str
    status: str
    capability: Capability | None = None
    step_up: bool = False

    @property
    def status_text(self) -> str:
        return STATUS_TEXT[self.status]

    @property
    def css(self) -> str:
        return {GRANTED: "granted", CONSENT: "consent", NEEDS_APPROVER: "approval"}.get(
            self.status, "refused"
        )


@dataclass
class ConsentPlan:
    agent: Agent
    tool_server: ToolServer
    lines: list[CapabilityLine] = field(default_factory=list)

    def keys(self, *statuses: str) -> list[str]:
        return [line.key for line in self.lines if line.status in statuses]

    def capabilities(self, *statuses: str) -> list[Capability]:
        return [line.capability for line in self.lines if line.status in statuses and line.capability]

    @property
    def consented(self) -> list[Capability]:
        """What the person's Allow creates or renews: new grants consent may give, and existing grants it
        could have given.  An existing grant consent could not give (high risk, approval) is honoured as it
        stands (with its step-up) but never created nor extended by consent."""
        return [
            line.capability
            for line in self.lines
            if line.capability
            and (line.status == CONSENT or (line.status == GRANTED and not needs_approver(line.capability)))
        ]

    @property
    def not_granted(self) -> dict[str, list[str]]:
        return {s: self.keys(s) for s in (OUTSIDE_CEILING, NEEDS_APPROVER, UNKNOWN)}


def plan_consent(*, agent: Agent, user, tool_server: ToolServer, requested: list[str]) -> ConsentPlan:
    """Classify each requested capability with the broker's rule (``evaluate_request``), plus consent's own:
    a high-risk capability, like one that requires approval, is an approver's decision."""
    decision = evaluate_request(agent=agent, user=user, audience=tool_server, requested=requested)
    by_key = {
        c.key: c for c in Capability.objects.filter(tool_server=tool_server, key__in=decision.requested)
    }
    allowed, outside = set(decision.allowed), set(decision.outside_ceiling)
    plan = ConsentPlan(agent=agent, tool_server=tool_server)
    for key in decision.requested:
        capability = by_key.get(key)
        if capability is None:
            status = UNKNOWN
        elif key in allowed:
            status = GRANTED
        elif key in outside:
            status = OUTSIDE_CEILING
        elif key in decision.needs_approval or needs_approver(capability):
            status = NEEDS_APPROVER
        else:
            status = CONSENT
        step_up = bool(capability and capability.requires_step_up)
        plan.lines.append(CapabilityLine(key=key, status=status, capability=capability, step_up=step_up))
    return plan


def authorization_prompt(
    request, capabilities, *, acr_values, max_age, flow: str, next_url: str
) -> tuple[auth_levels.Requirement, Any]:
    """(requirement, None) when the session meets it; else (requirement, the re-prompt): a code, enrolment
    or a new sign-in, then back to ``next_url``; recorded ``step_up.required``.  Bad ``max_age``: ValueError.
    """
    requirement = step_up.authorization_requirement(capabilities, acr_values=acr_values, max_age=max_age)
    if step_up.session_meets(request, requirement, flow=flow):
        return requirement, None
    step_up.remember_prompt(request, flow=flow)
    return requirement, prompt_for(request, requirement, next_url=next_url)


_REFUSAL_SENTENCES = {
    "invalid_target": "The agent must name exactly one tool server that Gatehouse knows (its resource).",
}


class Refusal(Exception):
    """The request cannot reach the user's decision; ``redirect_error`` says whether the client is told."""

    def __init__(self, sentence: str, *, reason: str, redirect_error: str = "", status: int = 400):
        super().__init__(sentence)
        self.sentence, self.reason, self.redirect_error, self.status = (
            sentence,
            reason,
            redirect_error,
            status,
        )


class ConsentForm(AllowForm):
    dpop_jkt = forms.CharField(required=False, widget=forms.HiddenInput())  # RFC 9449 §10
    # Step-up (OpenID-style, RFC 9470 §4): checked again when the person allows.
    acr_values = forms.CharField(required=False, max_length=500, widget=forms.HiddenInput())
    max_age = forms.CharField(required=False, max_length=12, widget=forms.HiddenInput())


def with_issuer(uri: str) -> str:
    """``uri`` with RFC 9207's ``iss`` = this issuer in its query, replacing any ``iss`` already there."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "iss"]
    query.append(("iss", settings.GATEHOUSE_ISSUER))
    return urlunsplit(parts._replace(query=urlencode(query)))


class ConsentView(AuthorizationView):
    template_name = "oauth2_provider/authorize.html"
    error_template_name = "governance/authorize_error.html"
    form_class = ConsentForm

    def get_initial(self):
        # The code is bound to the dpop_jkt of the request; it travels in the form like DOT's own fields.
        return {
            **super().get_initial(),
            "dpop_jkt": self.request.GET.get("dpop_jkt", ""),
            "acr_values": self.request.GET.get("acr_values", ""),
            "max_age": self.request.GET.get("max_age", ""),
        }

    def create_authorization_response(self, request, scopes, credentials, allow):
        # DOT hands oauthlib only these credentials (not the form body): add the form's dpop_jkt.
        if request.POST.get("dpop_jkt"):
            credentials = {**credentials, "dpop_jkt": request.POST["dpop_jkt"]}
        # The session's level and auth_time at this moment go into the code (never the form's words).
        credentials = {**credentials, step_up.CREDENTIAL: auth_levels.session_claims(request)}
        return super().create_authorization_response(request, scopes, credentials, allow)

    # --- checks shared by GET and POST -----------------------------------------------------------
    def _agent(self, client_id: str) -> Agent | None:
        application = get_application_model().objects.filter(client_id=client_id).first()
        if application is None:
            return None
        return (
            Agent.objects.select_related("organization", "owner", "application")
            .filter(application=application)
            .first()
        )

    def _check_parties(self, client_id: str) -> Agent | None:
        """Before oauthlib speaks: a known agent that is not active, or of another organization, gets a
        plain page (never a redirect to a client that may be compromised).  Unknown clients: oauthlib."""
        agent = self.agent = self._agent(client_id)
        if agent is None:
            return None
        if not agent.is_active:
            raise Refusal(
                f"The agent {agent.name} is {agent.get_status_display().lower()}; it cannot be authorized.",
                reason=f"agent {agent.status}",
                status=403,
            )
        user = self.request.user
        if user.organization_id is None or user.organization_id != agent.organization_id:
            raise Refusal(
                "Your account cannot authorize this agent: it belongs to another organization.",
                reason="user of another organization",
                status=403,
            )
        return agent

    def _check_request(self, *, agent: Agent | None, resources: list[str], scopes: list[str]) -> ConsentPlan:
        if agent is None:
            raise Refusal("This application is not a registered agent.", reason="not an agent", status=400)
        if agent.kind != AgentKind.INTERACTIVE:
            raise Refusal(
                f"The agent {agent.name} is a background agent; it does not act for people.",
                reason="background agent at the authorization endpoint",
                redirect_error="unauthorized_client",
            )
        try:
            # The broker's rules for resource and scope, so the page and the token endpoint agree.
            tool_server = resolve_audience(resources, agent=agent)
            scopes = parse_scope(" ".join(scopes))
        except refusals.Refusal as refusal:
            raise Refusal(
                _REFUSAL_SENTENCES.get(refusal.error, refusal.description),
                reason=refusal.description,
                redirect_error=refusal.error,
            ) from None
        if not scopes:
            raise Refusal(
                "The agent asked for no capability.",
                reason="no scope",
                redirect_error="invalid_scope",
            )
        return plan_consent(agent=agent, user=self.request.user, tool_server=tool_server, requested=scopes)

    def _refuse(
        self,
        refusal: Refusal,
        *,
        client_id: str,
        resources: list[str],
        scopes: list[str],
        redirect_uri: str | None,
        state: str | None,
    ):
        agent = getattr(self, "agent", None)
        authorization_refuse(
            actor=self.request.user,
            agent=agent,
            reason=refusal.reason,
            client_id=client_id,
            audience=" ".join(resources),
            capabilities=scopes,
        )
        if refusal.redirect_error and redirect_uri:
            # RFC 6749 §4.1.2.1: the client and redirect URI were validated, so the client is told.
            params = {"error": refusal.redirect_error, "error_description": refusal.sentence}
            if state:
                params["state"] = state
            separator = "&" if "?" in redirect_uri else "?"
            application = agent.application if agent else None
            return self.redirect(f"{redirect_uri}{separator}{urlencode(params)}", application)
        return render(
            self.request, self.error_template_name, {"sentence": refusal.sentence}, status=refusal.status
        )

    def redirect(self, redirect_to, application):
        """Every redirect of this endpoint to the client (code, denial, every error: DOT's, oauthlib's and
        ours) leaves through here, so each carries RFC 9207 ``iss``, exactly once."""
        return super().redirect(with_issuer(redirect_to), application)

    def dispatch(self, request, *args, **kwargs):
        token = state.begin("authorize")
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            state.end(token)

    def _audit_oauth_error(self, error: OAuthToolkitError, *, client_id: str, resources: list[str], scopes):
        trace = state.current()
        if trace.refusal is not None:  # a rule named the event (an elevation attempt): that one
            refusals.record(trace.refusal)
            return
        authorization_refuse(
            actor=self.request.user,
            agent=getattr(self, "agent", None),
            reason=trace.reason or str(getattr(error.oauthlib_error, "error", "invalid_request")),
            client_id=client_id[:255],
            audience=" ".join(resources)[:500],
            capabilities=scopes[:50],
        )

    # --- GET: show the page ------------------------------------------------------------------------
    def get(self, request, *args, **kwargs):
        client_id = request.GET.get("client_id", "")
        resources = request.GET.getlist("resource")
        asked = request.GET.get("scope", "").split()
        try:
            agent = self._check_parties(client_id)
        except Refusal as refusal:
            return self._refuse(
                refusal, client_id=client_id, resources=resources, scopes=asked, redirect_uri=None, state=None
            )
        try:
            scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            self._audit_oauth_error(error, client_id=client_id, resources=resources, scopes=asked)
            return self.error_response(error, application=agent.application if agent else None)
        try:
            self.plan = self._check_request(agent=agent, resources=resources, scopes=list(scopes))
            prompt = self._step_up(
                acr_values=request.GET.get("acr_values"),
                max_age=request.GET.get("max_age"),
                client_id=credentials["client_id"],
                code_challenge=credentials.get("code_challenge") or "",
                next_url=request.get_full_path(),
            )
        except Refusal as refusal:
            return self._refuse(
                refusal,
                client_id=credentials["client_id"],
                resources=resources,
                scopes=list(scopes),
                redirect_uri=credentials.get("redirect_uri"),
                state=credentials.get("state"),
            )
        if prompt is not None:
            return prompt
        # Consent is always asked: a client cannot skip the page with approval_prompt=auto.
        if "approval_prompt" in request.GET:
            request.GET = request.GET.copy()
            request.GET.pop("approval_prompt")
        # The consent form ends in a redirect to the agent: the page's CSP form-action must allow it.
        return csp.allow_form_action(super().get(request, *args, **kwargs), credentials.get("redirect_uri"))

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        plan = getattr(self, "plan", None)
        if plan is not None:
            context.update(
                agent=plan.agent,
                tool_server=plan.tool_server,
                lines=plan.lines,
                can_consent=bool(plan.keys(GRANTED, CONSENT)),
            )
        requirement = getattr(self, "requirement", None)
        if requirement is not None and step_up.demands_anything(requirement):
            context["step_up"] = {
                "second_factor": requirement.acr == auth_levels.ACR_MFA,
                "max_age": requirement.max_age,
                "acr": auth_levels.current_acr(self.request),
                "authenticated_at": auth_levels.auth_datetime(self.request),
            }
        return context

    # --- step-up: acr_values, max_age and what the capabilities need ---------------------------------------
    def _step_up(self, *, acr_values, max_age, client_id: str, code_challenge: str, next_url: str):
        """None when the session is strong and fresh enough, else the re-prompt (see
        :func:`authorization_prompt`); raises :class:`Refusal` for a malformed ``max_age``."""
        try:
            self.requirement, prompt = authorization_prompt(
                self.request,
                self.plan.capabilities(GRANTED, CONSENT),
                acr_values=acr_values,
                max_age=max_age,
                flow=step_up.flow_key(client_id, code_challenge),
                next_url=next_url,
            )
        except ValueError:
            raise Refusal(
                "The agent's max_age must be a whole number of seconds.",
                reason="malformed max_age",
                redirect_error="invalid_request",
            ) from None
        return prompt

    # --- POST: decide -------------------------------------------------------------------------------
    def form_valid(self, form):
        data = form.cleaned_data
        client_id, scopes = data["client_id"], data.get("scope", "").split()
        resources = (data.get("resource") or "").split()
        try:
            agent = self._check_parties(client_id)
            plan = self._check_request(agent=agent, resources=resources, scopes=scopes)
        except Refusal as refusal:
            # Without a validated redirect URI (the form is the client's words), show the page only.
            return self._refuse(
                refusal,
                client_id=client_id,
                resources=resources,
                scopes=scopes,
                redirect_uri=None,
                state=None,
            )
        audience = plan.tool_server.audience
        if not data.get("allow"):
            consent_deny(actor=self.request.user, agent=plan.agent, capabilities=scopes, audience=audience)
            return super().form_valid(form)
        self.plan = plan
        try:
            prompt = self._step_up(
                acr_values=data.get("acr_values"),
                max_age=data.get("max_age"),
                client_id=client_id,
                code_challenge=data.get("code_challenge") or "",
                next_url=step_up.authorize_url(self.request.path, data),
            )
        except Refusal as refusal:
            return self._refuse(
                refusal,
                client_id=client_id,
                resources=resources,
                scopes=scopes,
                redirect_uri=None,
                state=None,
            )
        if prompt is not None:
            return prompt  # never a code on a weaker or stale session: re-authenticate, then the page again
        consentable = plan.capabilities(CONSENT, GRANTED)
        if not consentable:
            return self._refuse(
                Refusal(
                    "None of the capabilities asked can be granted by your consent.",
                    reason="nothing consentable",
                ),
                client_id=client_id,
                resources=resources,
                scopes=scopes,
                redirect_uri=None,
                state=None,
            )
        try:
            if plan.consented:  # only existing high-risk grants asked: nothing for consent to write
                grant_consent(
                    actor=self.request.user,
                    agent=plan.agent,
                    capabilities=plan.consented,
                    audience=audience,
                    not_granted=plan.not_granted,
                )
        except GovernanceError as exc:
            return render(self.request, self.error_template_name, {"sentence": exc.message}, status=403)
        # The code carries only what the user's grants now cover; the rest was shown as not granted.
        form.cleaned_data["scope"] = " ".join(c.key for c in consentable)
        step_up.forget_prompt(
            self.request, flow=step_up.flow_key(client_id, data.get("code_challenge") or "")
        )
        return super().form_valid(form)

    def form_invalid(self, form):
        return render(
            self.request,
            self.error_template_name,
            {"sentence": "The consent form was incomplete; start again from the agent."},
            status=400,
        )
