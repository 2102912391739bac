"""The test project's Celery app: Redis broker on 127.0.0.1, queue named by ZEN_TEST_QUEUE."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zentestapp.settings")

app = Celery("zentestapp")
app.conf.update(
    broker_url=os.environ.get("ZEN_TEST_BROKER", "redis://127.0.0.1:6379/7"),
    task_default_queue=os.environ.get("ZEN_TEST_QUEUE", "zentest"),
    broker_connection_retry_on_startup=True,
    # ZEN_TEST_ROOT_LOGGER=1: Celery's own default, its handler on the root logger, so that
    # warnings logged in pool processes (whose stderr Celery redirects) are printed.
    worker_hijack_root_logger=os.environ.get("ZEN_TEST_ROOT_LOGGER") == "1",
    task_acks_late=False,
)
app.autodiscover_tasks(["zentestapp"])
