"""Approver pages, mounted at /portal/approvals/."""

from django.urls import path

from approvals import views

app_name = "approvals"
urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("history/", views.history, name="history"),
    path("outbox/", views.dev_outbox, name="dev_outbox"),
    path("link/<str:token>/", views.link, name="link"),
    path("<uuid:public_id>/", views.detail, name="detail"),
]
