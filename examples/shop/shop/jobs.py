"""The shop's Django tasks (``django.tasks``; on Django 5.2 its backport, ``django_tasks``), run by
django-tasks-db's ``db_worker``."""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task  # type: ignore[no-redef]

from shop.models import Order


@task()
def send_receipt(order_id: int) -> dict[str, object]:
    """Work the customer need not wait for goes to the background: the receipt is built there, in
    two queries, and its unit's queue wait says how long it waited for a worker."""
    order = Order.objects.select_related("customer").get(pk=order_id)
    lines = [(line.product.sku, line.quantity) for line in order.lines.select_related("product")]
    return {"to": order.customer.email, "lines": len(lines)}
