"""OAuth endpoints and discovery documents, mounted at the site root."""

app_name = "oauth"
urlpatterns: list = []
