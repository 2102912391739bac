"""Settings of the example shop.

Embedded defaults: SQLite, Celery tasks run eagerly, no MongoDB. ``DATABASE_URL``
(``postgresql://user@host:port/name``), ``MONGO_URL`` and ``CELERY_BROKER_URL`` switch to
real servers; the compose stack sets all three.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-shop-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
INSTALLED_APPS = ["django.contrib.contenttypes", "django_tasks_db", "shop"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database(url: str) -> dict[str, object]:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SHOP_SQLITE_PATH", BASE_DIR / "shop.sqlite3"),
        }
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "postgres",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": parts.port or 5432,
        # Sessions start in UTC (no extra set_config query per connection) and no statement
        # may run longer than 5 s: databases are external systems too.
        "OPTIONS": {"options": "-c TimeZone=UTC -c statement_timeout=5000", "connect_timeout": 5},
    }


DATABASES = {"default": _database(os.environ.get("DATABASE_URL", ""))}

MONGO_URL = os.environ.get("MONGO_URL", "")

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # A broker made of three folders: lets the demo run a real worker with nothing but Python.
    folder = Path(os.environ.get("SHOP_BROKER_FOLDER", BASE_DIR / "broker"))
    for name in ("out", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(folder / "out"),
        "data_folder_out": str(folder / "out"),
        "data_folder_processed": str(folder / "processed"),
        "control_folder": str(folder / "control"),
    }

# Django's own tasks, stored in the shop's database and run by django-tasks-db's db_worker.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# The payment provider; unset, the shop starts a stand-in itself (shop/payments.py).
PAYMENTS_URL = os.environ.get("PAYMENTS_URL", "")
