"""A small real Django project for tests/test_django.py: its database is the test's, as an
application login role (a member of mailroom_app)."""

import os
import shlex

# "host=... port=... user=... dbname=..." as the tests' login_as() writes it, parsed without
# psycopg 3: the psycopg2 runs have it unimportable (tests/test_django.py)
_db = dict(part.split("=", 1) for part in shlex.split(os.environ["DJANGOAPP_DSN"]))

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "mailroom.djangoapp"]
ROOT_URLCONF = "djangoapp.urls"
MIDDLEWARE: list[str] = []
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db["dbname"],
        "USER": _db["user"],
        "HOST": _db["host"],
        "PORT": _db.get("port", "5432"),
        "ATOMIC_REQUESTS": True,  # a view that raises leaves nothing, its mail included
    }
}
EMAIL_BACKEND = "mailroom.django.EmailBackend"
DEFAULT_FROM_EMAIL = "Bücher Shop <shop@bücher.example>"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
