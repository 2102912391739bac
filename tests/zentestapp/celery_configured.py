"""The same Celery app, started without ``opentelemetry-instrument``: zenmetry is configured
in every pool process, as the README documents."""

from celery.signals import worker_process_init

import zenmetry
from zentestapp.celery_app import app


@worker_process_init.connect(weak=False)
def _configure_zenmetry(**_: object) -> None:
    zenmetry.configure()


__all__ = ["app"]
