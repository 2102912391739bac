"""Tasks with known query counts."""

from __future__ import annotations

import time

import requests

from zenmetry import budget
from zentestapp.celery_app import app
from zentestapp.models import Customer


@app.task(name="zentestapp.tasks.three_queries")
def three_queries(i: int) -> int:
    """Exactly 3 PostgreSQL queries."""
    for pk in (1, 2, 3):
        list(Customer.objects.filter(pk=pk + i % 5))
    return i


@app.task(name="zentestapp.tasks.queries")
def queries(n: int, pause: float = 0.0) -> int:
    """n queries, optionally pausing between them (to overlap with other tasks)."""
    for pk in range(n):
        list(Customer.objects.filter(pk=pk + 1))
        time.sleep(pause)
    return n


@app.task(name="zentestapp.tasks.fanout")
def fanout(n: int) -> int:
    """n queries fanned out to a ThreadPoolExecutor of 4 threads."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    def query(pk: int) -> bool:
        try:
            return Customer.objects.filter(pk=pk).exists()
        finally:
            connections.close_all()  # this thread's own connection

    with ThreadPoolExecutor(4) as pool:
        return len(list(pool.map(query, range(1, n + 1))))


@app.task(name="zentestapp.tasks.decorated")
@budget(queries=5)
def decorated(n: int) -> int:
    """n queries under ``@budget(queries=5)``."""
    return queries(n)


@app.task(name="zentestapp.tasks.calls")
def calls(url: str, n: int) -> int:
    """n calls to an external system, each with a timeout."""
    for _ in range(n):
        requests.get(url, timeout=5)
    return n


@app.task(name="zentestapp.tasks.fails")
def fails() -> None:
    """One query, then a failure."""
    list(Customer.objects.filter(pk=1))
    raise RuntimeError("this task fails on purpose")


@app.task(bind=True, name="zentestapp.tasks.retries", max_retries=2, default_retry_delay=0)
def retries(self) -> str:  # type: ignore[no-untyped-def]
    """One query per attempt; retries twice, then succeeds."""
    list(Customer.objects.filter(pk=1))
    if self.request.retries < 2:
        raise self.retry(countdown=0)
    return "done"


@app.task(name="zentestapp.tasks.echo")
def echo(secret: str) -> str:
    """One query with ``secret`` as its parameter; returns it."""
    list(Customer.objects.filter(name=secret))
    return secret


@app.task(name="zentestapp.tasks.fails_with")
def fails_with(secret: str) -> None:
    """One query, then a failure whose message holds ``secret``."""
    list(Customer.objects.filter(pk=1))
    raise RuntimeError(f"cannot handle {secret}")
