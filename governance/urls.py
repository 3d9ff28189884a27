"""Portal pages (consent, second-factor enrolment, …)."""

app_name = "governance"
urlpatterns: list = []
