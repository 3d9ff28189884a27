from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "Gatehouse"
admin.site.site_title = "Gatehouse"
admin.site.index_title = "Governance"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="governance:home", permanent=False)),
    path("admin/", admin.site.urls),
    path("", include("governance.oauth.urls")),
    path("oauth/", include("approvals.ciba_urls")),
    path("", include("governance.enforcement.urls")),
    path("portal/approvals/", include("approvals.urls")),
    path("api/approvals/", include("approvals.api.urls")),
    path("portal/", include("governance.urls")),
    path("portal/audit/", include("audit.urls")),  # audit search, event pages, exports, API
    path("portal/", include("governance.portal.urls")),
]

# Friendly error pages (templates/403.html, 404.html, 500.html) are Django's defaults by name.
