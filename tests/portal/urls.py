"""The site's URLs plus stand-ins for the audit search and approvals inbox, to test the navigation slots."""

from django.http import HttpResponse
from django.urls import include, path

from config.urls import urlpatterns as site


def stand_in(request):
    return HttpResponse("stand-in")


audit = ([path("", stand_in, name="search")], "audit")
approvals = ([path("", stand_in, name="inbox")], "approvals")

urlpatterns = [
    path("portal/audit/", include(audit)),
    path("portal/approvals/", include(approvals)),
    *site,
]
