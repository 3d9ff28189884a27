"""The audit search screens, exports and API, mounted at /portal/audit/."""

from django.urls import path

from audit import api, views

app_name = "audit"
urlpatterns = [
    path("", views.search, name="search"),
    path("events/<int:seq>/", views.event_detail, name="event"),
    path("export.csv", views.export_events, {"export_format": "csv"}, name="export_csv"),
    path("export.jsonl", views.export_events, {"export_format": "jsonl"}, name="export_jsonl"),
    path("api/events/", api.AuditEventList.as_view(), name="api_events"),
]
