"""The decision API (OpenID AuthZEN), mounted at the site root beside the OAuth endpoints."""

from django.urls import path

from governance.enforcement import api

app_name = "enforcement"

urlpatterns = [
    path(".well-known/authzen-configuration", api.configuration, name="configuration"),
    path("access/v1/evaluation", api.EvaluationView.as_view(), name="evaluation"),
    path("access/v1/evaluations", api.EvaluationsView.as_view(), name="evaluations"),
]
