"""Settings of the test project; the tests choose the databases through ZEN_TEST_* variables."""

import os
import sys

if os.environ.get("ZEN_TEST_PG_DRIVER") == "psycopg2":
    # Django prefers psycopg 3 when both drivers are installed; hide it to run on psycopg2.
    sys.modules["psycopg"] = None  # type: ignore[assignment]

SECRET_KEY = "zenmetry-tests"
DEBUG = os.environ.get("ZEN_TEST_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "zentestapp.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    # The admin and what it needs, for comparing zenmetry's count with Django's (zencountapp).
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "zentestapp",
    "zencountapp",
    # Django's task framework with a real worker: django-tasks-db's db_worker.
    "django_tasks_db",
]
# Django 6's own task framework, or its backport on Django 5.2 (the same API).
_TASKS = "django.tasks" if __import__("django").VERSION >= (6,) else "django_tasks"
TASKS = {
    "default": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    "immediate": {"BACKEND": f"{_TASKS}.backends.immediate.ImmediateBackend"},
}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Django's own Redis cache on the machine's Redis, a database of the tests' own.
    "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/14"},
}
MIDDLEWARE: list[str] = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# The task workers' own log on stdout ("Task id=... path=... state=SUCCESSFUL"), the ground truth
# the tests check units against; Django 6 logs it to "django.tasks", the backport to "django_tasks".
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}},
    "loggers": {name: {"handlers": ["stdout"], "level": "INFO", "propagate": False} for name in (_TASKS,)},
}

if os.environ.get("ZEN_TEST_DB", "postgresql") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("ZEN_TEST_SQLITE_PATH", "zentest.sqlite3"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("ZEN_TEST_PG_DB", "zenmetry_test"),
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            # Start sessions in UTC so Django sends no set_config('TimeZone') query:
            # the tests count every query exactly. Timeouts, as the zen asks, unless a test
            # wants a database without them (ZEN_TEST_PG_TIMEOUTS=0).
            "OPTIONS": {"options": "-c TimeZone=UTC -c statement_timeout=10000", "connect_timeout": 10}
            if os.environ.get("ZEN_TEST_PG_TIMEOUTS", "1") == "1"
            else {"options": "-c TimeZone=UTC"},
        }
    }
    if os.environ.get("ZEN_TEST_PG_POOL"):  # Django's own psycopg pool, of this many connections
        size = int(os.environ["ZEN_TEST_PG_POOL"])
        DATABASES["default"]["OPTIONS"]["pool"] = {"min_size": size, "max_size": size, "timeout": 10}

MONGO_URL = os.environ.get("ZEN_TEST_MONGO_URL", "")
