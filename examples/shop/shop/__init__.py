"""The example shop: a small Django + Celery service that shows every rule of the zen."""

from shop.celery import app as celery_app

__all__ = ["celery_app"]
