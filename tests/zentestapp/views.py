"""Views with known query counts."""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pymongo
import requests
import urllib3
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections, transaction
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views import View

from zenmetry import budget
from zentestapp.models import Customer, Order

_kept: list[bytes] = []


@functools.cache
def mongo() -> pymongo.MongoClient:  # type: ignore[type-arg]
    return pymongo.MongoClient(settings.MONGO_URL)


def queries(request: HttpRequest, n: int) -> JsonResponse:
    """n PostgreSQL (or SQLite) queries of one shape."""
    for i in range(n):
        list(Customer.objects.filter(pk=i + 1))
    return JsonResponse({"n": n})


def cached(request: HttpRequest, alias: str) -> JsonResponse:
    """Through the cache ``alias``: 1 write, then 3 reads: a hit, a miss, a get_many of 2 keys
    that finds neither (a miss)."""
    from django.core.cache import caches

    cache = caches[alias]
    key = f"zen-{uuid.uuid4().hex}"
    cache.set(key, "value", 30)
    found = [cache.get(key), cache.get(f"{key}-absent"), cache.get_many([f"{key}-a", f"{key}-b"])]
    return JsonResponse({"found": found})


def enqueue(request: HttpRequest, queue: str) -> JsonResponse:
    """Send a task to the Redis broker, on ``queue`` (no worker consumes it here)."""
    from zentestapp.celery_app import app

    app.send_task("zentestapp.tasks.three_queries", args=[1], queue=queue)
    return JsonResponse({"sent": queue})


def immediate(request: HttpRequest) -> JsonResponse:
    """One query of its own, then a Django task of 3 queries run by the immediate backend."""
    from zentestapp import jobs

    list(Customer.objects.filter(pk=1))
    result = jobs.three_queries.using(backend="immediate").enqueue(1)
    return JsonResponse({"status": str(result.status), "value": result.return_value})


def timed(request: HttpRequest) -> JsonResponse:
    """One query, and a Server-Timing header of the view's own."""
    list(Customer.objects.filter(pk=1))
    response = JsonResponse({})
    response["Server-Timing"] = 'app;dur=1.5;desc="the view\'s own"'
    return response


def mixed(request: HttpRequest) -> JsonResponse:
    """7 SQL queries and 3 MongoDB calls."""
    for i in range(7):
        Customer.objects.filter(pk=i + 1).exists()
    for i in range(3):
        mongo().catalogue.products.find_one({"sku": f"S{i}"})
    return JsonResponse({"sql": 7, "mongo": 3})


def orm(request: HttpRequest) -> JsonResponse:
    """A tour of the ORM; returns how many statements Django itself executed (the round trips
    the driver makes besides, BEGIN, COMMIT, FETCH and CLOSE, are in the comments)."""
    executed = []

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        executed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        customer = Customer.objects.create(name="c")  # 1
        with transaction.atomic():  # BEGIN ... COMMIT: 2 round trips, not statements Django executes
            Order.objects.bulk_create([Order(customer=customer, number=i) for i in range(3)])  # 1
            with transaction.atomic():  # SAVEPOINT, RELEASE: 2
                Order.objects.filter(customer=customer).update(number=9)  # 1
        # 1 (a server-side cursor on PostgreSQL: DECLARE, then 3 FETCH and a CLOSE)
        list(Order.objects.filter(customer=customer).iterator(chunk_size=2))
        Order.objects.filter(customer=customer).count()  # 1
        list(Order.objects.select_related("customer").filter(customer=customer))  # 1
        Order.objects.filter(customer=customer).delete()  # 1 in BEGIN ... COMMIT (or more on SQLite, see test)
        customer.delete()  # 2: orders, then customer, in BEGIN ... COMMIT
    return JsonResponse({"executed": len(executed)})


async def async_queries(request: HttpRequest, n: int) -> JsonResponse:
    """n queries from an async view (the ORM runs them in a worker thread)."""
    for i in range(n):
        await Customer.objects.filter(pk=i + 1).aexists()
    return JsonResponse({"n": n})


def eager(request: HttpRequest, n: int) -> JsonResponse:
    """One query of its own, then a task run eagerly (in this request) making n queries."""
    from zentestapp.tasks import queries

    list(Customer.objects.filter(pk=1))
    queries.delay(n)
    return JsonResponse({"n": n})


def n_plus_one(request: HttpRequest) -> JsonResponse:
    """12 single-row lookups: one statement shape, run 12 times."""
    names = [Customer.objects.get(pk=pk).name for pk in range(1, 13)]
    return JsonResponse({"names": names})


def mongo_n_plus_one(request: HttpRequest) -> JsonResponse:
    """12 ``find_one`` calls with different values: one MongoDB shape, run 12 times."""
    for i in range(12):
        mongo().catalogue.products.find_one({"sku": f"SKU-{i}"})
    return JsonResponse({"calls": 12})


@budget(queries=2)
def decorated(request: HttpRequest, n: int) -> JsonResponse:
    """n queries under ``@budget(queries=2)``."""
    return queries(request, n)


@budget(queries=0, duration_ms=60_000)
class DecoratedClass(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        list(Customer.objects.all()[:1])
        return JsonResponse({"ok": True})


def _call(library: str, url: str, timeout: float | None) -> int:
    """One GET with ``library``; ``timeout`` None means the library's way of having none."""
    if library == "requests":
        return requests.get(url, timeout=timeout).status_code if timeout else requests.get(url).status_code
    if library == "httpx":
        with httpx.Client(timeout=timeout) as client:  # httpx.Client(timeout=None) is Timeout(None)
            return client.get(url).status_code
    if library == "httpx-async":

        async def get() -> int:
            async with httpx.AsyncClient(timeout=timeout) as client:
                return (await client.get(url)).status_code

        return asyncio.run(get())
    if library == "urllib3":
        with urllib3.PoolManager(retries=False) as pool:
            response = pool.request("GET", url, timeout=timeout) if timeout else pool.request("GET", url)
            return response.status
    if library in ("urllib3-total", "urllib3-connect-only"):
        given = urllib3.Timeout(total=3) if library == "urllib3-total" else urllib3.Timeout(connect=2)
        with urllib3.PoolManager(retries=False, timeout=given) as pool:
            return pool.request("GET", url).status
    with urllib.request.urlopen(url, timeout=timeout) if timeout else urllib.request.urlopen(url) as response:
        return int(response.status)


def external(request: HttpRequest, library: str, path: str) -> JsonResponse:
    """``count`` calls to the stand-in external server; ``?timeout=`` gives each its own timeout."""
    timeout = float(request.GET["timeout"]) if "timeout" in request.GET else None
    url = f"{os.environ['ZEN_TEST_EXTERNAL_URL']}/{path}"
    start = time.monotonic()
    try:
        outcomes = [str(_call(library, url, timeout)) for _ in range(int(request.GET.get("count", 1)))]
    except Exception as error:
        outcomes = [f"{type(error).__module__}.{type(error).__qualname__}"]
    return JsonResponse({"outcomes": outcomes, "seconds": time.monotonic() - start})


def raw(request: HttpRequest) -> JsonResponse:
    """Raw SQL with a literal in the statement and a parameter beside it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s::text, 'sensitive-literal-42' FROM zentestapp_customer WHERE id = 1", ["param-value-7"]
        )
        row = cursor.fetchone()
    return JsonResponse({"row": list(row)})


def violation(request: HttpRequest) -> JsonResponse:
    """A unique violation whose message quotes the offending value (``?email=``)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS zen_unique (email text UNIQUE)")
        for _ in range(2):
            cursor.execute("INSERT INTO zen_unique VALUES (%s)", [request.GET["email"]])
    return JsonResponse({"unreachable": True})


def grow(request: HttpRequest, mib: int) -> JsonResponse:
    """Keep ``mib`` MiB alive after the request: the process's RSS grows by about that.
    ``?sleep=`` seconds first (to overlap with another request)."""
    time.sleep(float(request.GET.get("sleep", 0)))
    _kept.append(b"x" * (mib * 1024 * 1024))
    return JsonResponse({"mib": mib})


def template_n_plus_one(request: HttpRequest) -> HttpResponse:
    """1 query for 12 customers, then the template counts each one's orders: 12 of one shape."""
    return render(request, "zentestapp/orders.html", {"customers": Customer.objects.order_by("pk")[:12]})


def template_method_n_plus_one(request: HttpRequest) -> HttpResponse:
    """The same N+1 made by a model method the template calls (``Customer.orders``)."""
    return render(request, "zentestapp/orders_by_method.html", {"customers": Customer.objects.order_by("pk")[:12]})


def slow(request: HttpRequest) -> JsonResponse:
    """One statement of 0.6 s."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.6)")
    return JsonResponse({"slept": 0.6})


def boom(request: HttpRequest) -> JsonResponse:
    list(Customer.objects.filter(pk=1))
    raise ValueError("boom")


class ClassBased(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        list(Customer.objects.all()[:1])
        return JsonResponse({"ok": True})


def pause_in_database(request: HttpRequest) -> JsonResponse:
    """One query, then one that sleeps in PostgreSQL (``?seconds=``, 5 by default): time for a
    test to terminate the backend under it."""
    list(Customer.objects.filter(pk=1))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [float(request.GET.get("seconds", "5"))])
    return JsonResponse({"slept": True})


def secrets(request: HttpRequest) -> JsonResponse:
    """Every channel a backend has, each carrying one of the test's canaries (``?name=value``):
    a literal inlined in raw SQL and a bound parameter, a MongoDB filter value, an outgoing call
    with credentials in its URL, a query string and an ``Authorization`` header, a task's
    argument (its result is the same), and the request's body echoed in the response's."""
    from zentestapp.tasks import echo

    canary = request.GET
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT '{canary['literal']}', %s::text FROM zentestapp_customer WHERE id = 1",
            [canary["parameter"]],
        )
        cursor.fetchone()
    mongo().catalogue.products.find_one({"sku": canary["mongo"]})
    external = os.environ["ZEN_TEST_EXTERNAL_URL"].replace("http://", f"http://user:{canary['password']}@")
    requests.get(
        f"{external}/ok?api_key={canary['outgoing_query']}",
        headers={"Authorization": f"Bearer {canary['outgoing_header']}"},
        timeout=5,
    )
    echo.delay(canary["task"])
    return JsonResponse({"echo": request.body.decode(), "token": canary["response"]})


def secret_error(request: HttpRequest) -> JsonResponse:
    """An exception whose message is built from the request's data."""
    list(Customer.objects.filter(pk=1))
    raise ValueError(f"cannot handle {request.GET['error']}")


def raw_literal(request: HttpRequest, i: int) -> JsonResponse:
    """Raw SQL with the path's number inlined as literals: one statement text per number."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 'soak-{i}', {i} FROM zentestapp_customer WHERE id = 1")
        cursor.fetchone()
    return JsonResponse({"i": i})


def shape_caches(request: HttpRequest) -> JsonResponse:
    """The statement-shape cache of this process, which the export's scrubbing shares (for
    benchmarks/soak.py)."""
    from zenmetry.units import _shapes

    return JsonResponse({"sql_shape": _shapes.sql_shape.cache_info()._asdict()})


def _record(request: HttpRequest, made: int, started: int) -> None:
    """Write how many queries the body made, and started, to ``?record=`` (a path): the ground
    truth of a body the client may leave before its end."""
    if "record" in request.GET:
        with open(request.GET["record"], "w") as file:
            file.write(f"{made} {started}")


def stream(request: HttpRequest, before: int, during: int) -> StreamingHttpResponse:
    """``before`` queries in the view, then a streamed body making one query per part, ``during``
    parts (``?size=`` bytes each, ``?sleep=`` seconds after each, ``?call=1``: an external call
    for each, ``?grow=`` MiB kept at the end)."""
    for pk in range(1, before + 1):
        list(Customer.objects.filter(pk=pk))
    size, pause = int(request.GET.get("size", 3)), float(request.GET.get("sleep", 0))

    def body():  # type: ignore[no-untyped-def]
        made = started = 0
        try:
            for i in range(during):
                started += 1
                list(Customer.objects.filter(pk=i % 50 + 1))
                made += 1
                if "call" in request.GET:
                    requests.get(f"{os.environ['ZEN_TEST_EXTERNAL_URL']}/ok", timeout=5)
                yield b"x" * size
                time.sleep(pause)
            if "grow" in request.GET:
                _kept.append(b"g" * (int(request.GET["grow"]) * 1024 * 1024))
        finally:
            _record(request, made, started)

    return StreamingHttpResponse(body())


async def astream(request: HttpRequest, before: int, during: int) -> StreamingHttpResponse:
    """The same from an async view with an asynchronous body (``?sleep=`` after each part)."""
    for pk in range(1, before + 1):
        await Customer.objects.filter(pk=pk).aexists()
    size, pause = int(request.GET.get("size", 3)), float(request.GET.get("sleep", 0))

    async def body():  # type: ignore[no-untyped-def]
        made = started = 0
        try:
            for i in range(during):
                started += 1
                await Customer.objects.filter(pk=i % 50 + 1).aexists()
                made += 1
                yield b"x" * size
                await asyncio.sleep(pause)
        finally:
            _record(request, made, started)

    return StreamingHttpResponse(body())


def stream_fails(request: HttpRequest) -> StreamingHttpResponse:
    """A streamed body that makes one query, then raises."""

    def body():  # type: ignore[no-untyped-def]
        list(Customer.objects.filter(pk=2))
        yield b"x"
        raise RuntimeError("the body fails on purpose")

    return StreamingHttpResponse(body())


def file(request: HttpRequest, kib: int) -> FileResponse:
    """One query, then a file of ``kib`` KiB."""
    list(Customer.objects.filter(pk=1))
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
    handle.write(b"f" * (kib * 1024))
    handle.seek(0)
    return FileResponse(handle)


def _query_in_thread(pk: int) -> bool:
    try:
        return Customer.objects.filter(pk=pk).exists()
    finally:
        connections.close_all()  # this thread's own connection


def fanout(request: HttpRequest, n: int) -> JsonResponse:
    """n queries fanned out to a ThreadPoolExecutor of 4 threads."""
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(_query_in_thread, range(1, n + 1)))
    return JsonResponse({"n": len(found)})


def threads(request: HttpRequest, n: int) -> JsonResponse:
    """n queries, each in a ``threading.Thread`` of its own."""
    started = [threading.Thread(target=_query_in_thread, args=(pk,)) for pk in range(1, n + 1)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return JsonResponse({"n": n})


async def async_fanout(request: HttpRequest, n: int) -> JsonResponse:
    """n queries from an async view, each through ``sync_to_async(thread_sensitive=False)`` at once."""
    found = await asyncio.gather(
        *(sync_to_async(_query_in_thread, thread_sensitive=False)(pk) for pk in range(1, n + 1))
    )
    return JsonResponse({"n": len(found)})
