"""The plain JSON API for agents that do not speak CIBA: create an action request, read its status.

The agent authenticates exactly as at the token endpoint (private_key_jwt in the body, or its client
secret by HTTP Basic or in the body), through the broker's own validator.  Client assertions belong in a
body, never in a URL, so reading a status is a POST too (``GET`` works with HTTP Basic).  Every error has
the one API shape (governance/api_errors.py); every refusal is audited.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.http import HttpRequest
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import selectors, services
from approvals.details import parse_details
from approvals.models import ActionRequest
from governance.errors import GovernanceError, InvalidInput, NotPermitted
from governance.models import Agent, Capability, User
from governance.oauth.validator import authenticate_request_client

AUTH_FIELDS = ("client_id", "client_secret", "client_assertion", "client_assertion_type")
MAX_BODY_BYTES = 64 * 1024
STATUS_CODES = {"invalid_input": 400, "not_permitted": 403, "conflict": 409, "invalid_state": 409}


class ApiError(exceptions.APIException):
    def __init__(self, message: str, *, code: str, status_code: int):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.default_code = code


def domain_error(exc: GovernanceError) -> ApiError:
    return ApiError(exc.message, code=exc.code, status_code=STATUS_CODES.get(exc.code, 400))


def authenticate_agent(request: HttpRequest, data: Mapping) -> Agent | None:
    """The active agent whose client credentials came with the request (the token endpoint's rules)."""
    body = {name: data[name] for name in AUTH_FIELDS if isinstance(data.get(name), str)}
    principal = authenticate_request_client(request, body)
    return principal if isinstance(principal, Agent) and principal.is_active else None


class CreateSerializer(serializers.Serializer):
    capability = serializers.CharField(max_length=128)
    resource = serializers.CharField(max_length=500, required=False)
    login_hint = serializers.CharField(max_length=150, required=False, allow_null=True)
    authorization_details = serializers.JSONField()
    binding_message = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, trim_whitespace=False
    )
    requested_expiry = serializers.IntegerField(min_value=1, max_value=7 * 24 * 3600, required=False)


class ActionRequestSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id")
    capability = serializers.CharField(source="capability.key")
    user = serializers.CharField(source="on_behalf_of.username", default=None)
    approvals_needed = serializers.IntegerField()

    class Meta:
        model = ActionRequest
        fields = [
            "id",
            "status",
            "capability",
            "user",
            "authorization_details",
            "binding_message",
            "approvals_required",
            "approvals_received",
            "approvals_needed",
            "created_at",
            "expires_at",
            "decided_at",
            "used_at",
        ]


class AgentView(APIView):
    """Base: no session or token authentication; the agent's client credentials are checked per request."""

    authentication_classes: list = []
    permission_classes: list = []
    parser_classes = [JSONParser, FormParser]

    def agent(self, request) -> Agent:
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            raise ApiError("The request body is too large.", code="too_large", status_code=413)
        data = request.data if request.method == "POST" else {}
        if not isinstance(data, Mapping):
            raise ApiError("The body must be a JSON object.", code="invalid_input", status_code=400)
        agent = authenticate_agent(request._request, data)
        if agent is None:
            services.action_request_refuse(actor=None, why="client authentication failed")
            raise ApiError("Client authentication failed.", code="invalid_client", status_code=401)
        return agent


def _capability(agent: Agent, key: str, resource: str | None) -> Capability:
    candidates = agent.ceiling.filter(key=key).select_related("tool_server")
    if resource:
        candidates = candidates.filter(tool_server__audience=resource)
    found = list(candidates[:2])
    if len(found) != 1:
        raise InvalidInput("capability: not one capability of this agent (name the resource).")
    return found[0]


def _user(agent: Agent, login_hint: str | None, capability: Capability) -> User | None:
    """The user named by ``login_hint`` in the agent's organization (None: a background agent's request).

    An unknown name is refused with the same sentence as a user without a grant: nothing is revealed."""
    if login_hint is None:
        return None
    user = User.objects.filter(organization_id=agent.organization_id, username=login_hint).first()
    if user is None:
        raise NotPermitted(services.no_grant_message(capability))
    return user


class ActionRequestCreate(AgentView):
    def post(self, request):
        agent = self.agent(request)
        form = CreateSerializer(data={k: v for k, v in request.data.items() if k not in AUTH_FIELDS})
        try:
            if not form.is_valid():
                first = next(iter(form.errors.items()))
                raise InvalidInput(f"{first[0]}: {first[1][0]}")
            data = form.validated_data
            details = data["authorization_details"]
            if isinstance(details, str):
                details = parse_details(details)
            capability = _capability(agent, data["capability"], data.get("resource"))
            user = _user(agent, data.get("login_hint"), capability)
            action_request = services.action_request_create(
                actor=agent,
                capability=capability,
                on_behalf_of=user,
                authorization_details=details,
                binding_message=data.get("binding_message", ""),
                requested_expiry=data.get("requested_expiry"),
            )
        except GovernanceError as exc:
            services.action_request_refuse(actor=agent, why=exc.message)
            raise domain_error(exc) from None
        return Response(ActionRequestSerializer(action_request).data, status=status.HTTP_201_CREATED)


class ActionRequestStatus(AgentView):
    def _read(self, request, public_id):
        agent = self.agent(request)
        action_request = selectors.of_agent(agent).filter(public_id=public_id).first()
        if action_request is None:
            raise ApiError("No such request.", code="not_found", status_code=404)
        return Response(ActionRequestSerializer(action_request).data)

    def get(self, request, public_id):
        return self._read(request, public_id)

    def post(self, request, public_id):
        return self._read(request, public_id)
