"""Portal pages (sign-in, the signed-in user's grants, …), mounted at /portal/."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from governance.portal import views

app_name = "governance"
urlpatterns = [
    path("", views.my_page, name="home"),  # every person's own page: the agents acting for them
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html",
            redirect_authenticated_user=False,
            next_page="governance:home",
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="governance:login"), name="logout"),
    path("mfa/", include("governance.mfa.urls")),  # second factor: enrol, verify, remove (step-up)
]
