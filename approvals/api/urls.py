"""The JSON API for agents, mounted at /api/approvals/."""

from django.urls import path

from approvals.api import views

app_name = "approvals_api"
urlpatterns = [
    path("requests/", views.ActionRequestCreate.as_view(), name="create"),
    path("requests/<uuid:public_id>/", views.ActionRequestStatus.as_view(), name="status"),
]
