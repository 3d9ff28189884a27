"""Second-factor pages, included by governance.urls under /portal/mfa/ (names in the governance namespace)."""

from django.urls import path

from governance.mfa import views

urlpatterns = [
    path("", views.overview, name="mfa"),
    path("enrol/", views.enrol, name="mfa_enrol"),
    path("enrol/confirm/", views.confirm, name="mfa_confirm"),
    path("verify/", views.verify, name="mfa_verify"),
    path("recovery/", views.recovery, name="mfa_recovery"),
    path("devices/<int:pk>/remove/", views.remove, name="mfa_remove"),
]
