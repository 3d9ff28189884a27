"""Vanilla django-oauth-toolkit: stock models, stock views, client secrets, nothing of Gatehouse.

Environment: DATABASE_URL (PostgreSQL), SECRET_KEY, and VANILLA_SECRET_HASHER: "default" (Django's
PBKDF2, DOT's default) or "md5" (Django's fast salted MD5 hasher, standing in for any fast hasher).
"""

import os

import dj_database_url

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "oauth2_provider",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "bench.vanilla_dot.urls"
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.MD5PasswordHasher",
]
OAUTH2_PROVIDER = {
    "CLIENT_SECRET_HASHER": os.environ.get("VANILLA_SECRET_HASHER", "default"),
    "SCOPES": {"records.read_own": "Read own records"},
    "DEFAULT_SCOPES": ["records.read_own"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": 300,
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
