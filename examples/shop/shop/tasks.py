"""The shop's Celery tasks; each shows one rule of the zen (see the README's tour)."""

from __future__ import annotations

import time

import requests
from celery import shared_task

from shop import payments
from shop.models import Order, OrderLine


@shared_task(name="shop.tasks.confirm_payment")
def confirm_payment(order_id: int) -> str:
    """The right place for an external call: in the background, with a timeout."""
    order = Order.objects.get(pk=order_id)
    response = requests.post(f"{payments.url()}/charge", json={"order": order.pk}, timeout=2)
    response.raise_for_status()
    Order.objects.filter(pk=order.pk).update(paid=True)
    return "paid"


@shared_task(name="shop.tasks.rebuild_stats")
def rebuild_stats() -> int:
    """Slow: longer than its budget allows."""
    lines = OrderLine.objects.count()
    time.sleep(1.2)  # stands for a heavy aggregation
    return lines


@shared_task(bind=True, name="shop.tasks.sync_stock", max_retries=2, default_retry_delay=0)
def sync_stock(self) -> None:  # type: ignore[no-untyped-def]
    """Fails, is retried twice, then fails for good: each attempt is a unit of its own."""
    Order.objects.count()
    try:
        raise ConnectionError("the warehouse is not answering")
    except ConnectionError as error:
        raise self.retry(exc=error, countdown=0) from error
