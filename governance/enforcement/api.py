"""The decision API's HTTP edge (OpenID AuthZEN Authorization API 1.0 shape): parse, authenticate the
calling tool server, call the pipeline, answer.  Errors use the one API error shape."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.actions import Action
from governance.enforcement import pipeline, requests
from governance.enforcement.caller import authenticate_caller
from governance.enforcement.reasons import Denial
from governance.models import ToolServer
from governance.oauth import refusals, state
from governance.oauth.refusals import RefusalEvent

log = logging.getLogger(__name__)

REALM = 'Basic realm="gatehouse"'


class InvalidDecisionRequest(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_request"
    default_detail = "The request is not a decision request."


class DecisionRequestTooLarge(InvalidDecisionRequest):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


class CallerNotAuthenticated(AuthenticationFailed):
    default_code = "invalid_client"
    default_detail = "Decisions are for registered tool servers, with their own credentials."


class _StoreUnavailable(Exception):
    """The database did not answer while authenticating the caller."""


class ToolServerAuthentication(BaseAuthentication):
    """A registered tool server's credentials (docs/decision-api.md); anything else is refused and audited."""

    def authenticate(self, request):
        trace = state.begin("decision")
        try:
            tool_server = authenticate_caller(request._request)
            if tool_server is None:
                noted = state.current()
                refusals.record(
                    RefusalEvent(
                        action=Action.DECISION_CALLER_REFUSED,
                        error="invalid_client",
                        agent=noted.agent,
                        tool_server=noted.tool_server,
                        parameters={
                            "reason": noted.reason or "not a registered tool server",
                            "client_id": noted.client_id,
                        },
                    )
                )
                raise CallerNotAuthenticated()
        except DatabaseError:
            raise _StoreUnavailable() from None
        finally:
            state.end(trace)
        return (None, tool_server)

    def authenticate_header(self, request):
        return REALM


class IsToolServer(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.auth, ToolServer)


class DecisionView(APIView):
    authentication_classes = [ToolServerAuthentication]
    permission_classes = [IsToolServer]
    parser_classes: list = []

    def initial(self, request, *args, **kwargs):
        # The body is read (bounded) before anyone looks at it, credentials included.
        raw = request._request.read(requests.MAX_BODY_BYTES + 1)
        try:
            self.body = requests.parse_body(raw)
        except requests.BadRequest as exc:
            self.body_error = exc
        else:
            self.body_error = None
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc):
        if isinstance(exc, _StoreUnavailable):
            # The caller could not be checked: no decision about anything, but a deny, never a 5xx page.
            log.warning("decision caller authentication: the database did not answer")
            unavailable = pipeline.Decision(allowed=False, decision_id="", denial=Denial("unavailable"))
            return Response(unavailable.answer(), status=status.HTTP_200_OK)
        return super().handle_exception(exc)

    def parsed(self) -> dict:
        if self.body_error is not None:
            if self.body_error.status == 413:
                raise DecisionRequestTooLarge(self.body_error.message)
            raise InvalidDecisionRequest(self.body_error.message)
        return self.body


_SINGLE_EXAMPLE = {
    "subject": {
        "type": "agent",
        "id": "voice-assistant-client-id",
        "properties": {"token": "<access token>", "dpop": "<DPoP proof, when the token is bound>"},
    },
    "action": {"name": "records.read_own"},
    "resource": {
        "type": "tool",
        "id": "read_patient_record",
        "properties": {"parameters": {"patient_id": "p-001"}},
    },
    "context": {"http": {"method": "POST", "url": "https://records.example/mcp"}},
}


class EvaluationView(DecisionView):
    """May this one tool call proceed?"""

    @extend_schema(
        operation_id="access_evaluation",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        examples=[OpenApiExample("read own record", value=_SINGLE_EXAMPLE, request_only=True)],
        description="OpenID AuthZEN evaluation; see docs/decision-api.md.",
    )
    def post(self, request):
        try:
            call = requests.single(self.parsed())
        except requests.BadRequest as exc:
            raise InvalidDecisionRequest(exc.message) from None
        return Response(pipeline.decide(call, request.auth).answer())


class EvaluationsView(DecisionView):
    """May these tool calls proceed?  (A batch, with ``options.evaluations_semantic``.)"""

    @extend_schema(
        operation_id="access_evaluations",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        description="OpenID AuthZEN batch evaluation; see docs/decision-api.md.",
    )
    def post(self, request):
        try:
            calls, semantic = requests.batch(self.parsed())
        except requests.BadRequest as exc:
            raise InvalidDecisionRequest(exc.message) from None
        decisions = pipeline.decide_all(calls, request.auth, semantic=semantic)
        return Response({"evaluations": [decision.answer() for decision in decisions]})


@require_GET
def configuration(request):
    """``/.well-known/authzen-configuration``: where this PDP answers."""
    issuer = settings.GATEHOUSE_ISSUER
    response = JsonResponse(
        {
            "policy_decision_point": issuer,
            "access_evaluation_endpoint": issuer + reverse("enforcement:evaluation"),
            "access_evaluations_endpoint": issuer + reverse("enforcement:evaluations"),
        }
    )
    response["Cache-Control"] = "public, max-age=300"
    return response
