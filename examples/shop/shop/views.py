"""Views of the example shop; each one shows one rule of the zen (see the README's tour)."""

from __future__ import annotations

import functools
import time

import pymongo
import requests
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

from shop import jobs, payments, tasks
from shop.models import Category, Order

_REPORTS: list[list[dict[str, object]]] = []


def order_detail(request: HttpRequest, pk: int) -> JsonResponse:
    """Within budget: one query for the order and its customer, one for its lines."""
    order = Order.objects.select_related("customer").get(pk=pk)
    lines = [{"sku": line.product.sku, "quantity": line.quantity} for line in order.lines.select_related("product")]
    return JsonResponse({"order": order.pk, "customer": order.customer.name, "lines": lines})


def invoice(request: HttpRequest, pk: int) -> JsonResponse:
    """Five queries, each needed: the page the benchmarks measure."""
    return JsonResponse(_invoice(pk))


def invoices(request: HttpRequest) -> JsonResponse:
    """The invoices of the first six orders: thirty queries, within this page's own budget (the
    benchmarks' heavier page)."""
    return JsonResponse({"invoices": [_invoice(pk) for pk in range(1, 7)]})


def _invoice(pk: int) -> dict[str, object]:
    order = Order.objects.select_related("customer").get(pk=pk)  # 1
    lines = list(order.lines.select_related("product"))  # 2
    previous = Order.objects.filter(customer=order.customer, pk__lt=order.pk).count()  # 3
    categories = sorted(
        Category.objects.filter(product__orderline__order=order).distinct().values_list("name", flat=True)
    )  # 4
    unpaid = Order.objects.filter(customer=order.customer, paid=False).exists()  # 5
    total = sum(line.product.price * line.quantity for line in lines)
    return {
        "order": order.pk,
        "customer": order.customer.name,
        "total": str(total),
        "previous_orders": previous,
        "categories": categories,
        "customer_has_unpaid": unpaid,
    }


def order_list(request: HttpRequest) -> JsonResponse:
    """N+1: one query for the orders, then one more per order for its customer."""
    orders = Order.objects.order_by("pk")[:12]
    return JsonResponse({"orders": [{"order": o.pk, "customer": o.customer.name} for o in orders]})


def order_list_fixed(request: HttpRequest) -> JsonResponse:
    """The same page with ``select_related``: one query."""
    orders = Order.objects.select_related("customer").order_by("pk")[:12]
    return JsonResponse({"orders": [{"order": o.pk, "customer": o.customer.name} for o in orders]})


def report(request: HttpRequest) -> JsonResponse:
    """Memory: every report is kept in a module-level list "for later", so the process grows."""
    rows = [{"order": i, "line": j, "note": "x" * 64} for i in range(5000) for j in range(40)]
    _REPORTS.append(rows)
    return JsonResponse({"rows": len(rows), "kept_reports": len(_REPORTS)})


def search(request: HttpRequest) -> JsonResponse:
    """One slow statement (standing in for a full scan on a missing index): over slow_query_ms.
    PostgreSQL sleeps in ``pg_sleep``; on SQLite the same statement calls a function of the
    same name defined here, so the statement takes 0.8 s whatever the machine's speed."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            connection.connection.create_function("pg_sleep", 1, time.sleep)
        cursor.execute("SELECT pg_sleep(0.8)")
    return JsonResponse({"found": 0})


def checkout(request: HttpRequest, pk: int) -> JsonResponse:
    """Two sins: the payment provider is called while the customer waits, and without a timeout."""
    order = Order.objects.get(pk=pk)
    response = requests.post(f"{payments.url()}/charge", json={"order": order.pk})  # no timeout
    Order.objects.filter(pk=order.pk).update(paid=True)
    return JsonResponse({"order": order.pk, "payment": response.json()["status"]})


def checkout_background(request: HttpRequest, pk: int) -> JsonResponse:
    """The fixed twin: the call goes to a task, which gives it a timeout."""
    order = Order.objects.get(pk=pk)
    tasks.confirm_payment.delay(order.pk)
    return JsonResponse({"order": order.pk, "payment": "queued"})


def receipt(request: HttpRequest, pk: int) -> JsonResponse:
    """The receipt goes to a Django task: the page answers in one query."""
    order = Order.objects.get(pk=pk)
    result = jobs.send_receipt.enqueue(order.pk)
    return JsonResponse({"order": order.pk, "receipt": str(result.status)})


def rebuild_stats(request: HttpRequest) -> JsonResponse:
    tasks.rebuild_stats.delay()
    return JsonResponse({"stats": "queued"})


def sync_stock(request: HttpRequest) -> JsonResponse:
    tasks.sync_stock.delay()
    return JsonResponse({"stock": "queued"})


@functools.cache
def _mongo() -> pymongo.MongoClient:  # type: ignore[type-arg]
    # Bounded waits: a database is an external system too.
    return pymongo.MongoClient(settings.MONGO_URL, serverSelectionTimeoutMS=2000, socketTimeoutMS=2000)


def catalogue(request: HttpRequest) -> JsonResponse:
    """PostgreSQL (or SQLite) for the categories, MongoDB for the products of each one. The
    categories come from Django's cache: a miss costs their query, a hit none."""
    categories = cache.get_or_set("shop:categories", lambda: list(Category.objects.order_by("pk")), 300)
    if not settings.MONGO_URL:
        return JsonResponse({"categories": [c.name for c in categories], "products": "MONGO_URL is not set"})
    products = {
        category.name: [p["sku"] for p in _mongo().shop.products.find({"category": category.pk}, {"_id": 0})]
        for category in categories
    }
    return JsonResponse({"categories": [c.name for c in categories], "products": products})
