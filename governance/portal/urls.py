"""Portal pages for admins (dashboard, agents, grants) and every person (their own grants), under /portal/."""

from django.urls import path

from governance.portal import views

app_name = "portal"
urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("agents/", views.agent_list, name="agents"),
    path("agents/<int:pk>/", views.agent_detail, name="agent"),
    path("agents/<int:pk>/suspend/", views.agent_suspend, name="agent_suspend"),
    path("agents/<int:pk>/reactivate/", views.agent_reactivate, name="agent_reactivate"),
    path("agents/<int:pk>/ceiling/", views.agent_ceiling, name="agent_ceiling"),
    path("grants/new/", views.grant_new, name="grant_new"),
    path("grants/<int:pk>/revoke/", views.grant_revoke, name="grant_revoke"),
    path("me/grants/<int:pk>/revoke/", views.my_grant_revoke, name="my_grant_revoke"),
    path("me/agents/<int:pk>/revoke/", views.my_agent_revoke, name="my_agent_revoke"),
]
