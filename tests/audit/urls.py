"""A test-only view that records one event, so that a real request goes through the middleware stack."""

from django.http import JsonResponse
from django.urls import path

from audit.services import Actor, record


def record_view(request):
    event = record(action="token.introspected", actor=Actor(type="system", label="view"))
    return JsonResponse({"seq": event.seq})


urlpatterns = [path("record/", record_view)]
