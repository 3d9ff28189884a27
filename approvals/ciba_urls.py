"""The CIBA backchannel authentication endpoint, mounted under /oauth/ beside the broker's endpoints."""

from django.urls import path

from approvals import backchannel

app_name = "ciba"
urlpatterns = [
    path("bc-authorize/", backchannel.backchannel_authentication, name="bc-authorize"),
]
