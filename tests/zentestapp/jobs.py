"""Django tasks (``django.tasks``, or its backport on Django 5.2), run by django-tasks-db's
``db_worker`` or by the immediate backend inside a request."""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task  # type: ignore[no-redef]

from zenmetry import budget
from zentestapp.models import Customer


@task()
def three_queries(first: int) -> int:
    """3 queries."""
    return sum(Customer.objects.filter(pk=pk).count() for pk in (first, first + 1, first + 2))


@task()
def fails() -> None:
    """1 query, then an error."""
    Customer.objects.filter(pk=1).count()
    raise RuntimeError("the task fails on purpose")


@budget(queries=1)
@task()
def over_its_budget() -> None:
    """2 queries against a @budget of 1 (put above @task)."""
    Customer.objects.filter(pk=1).count()
    Customer.objects.filter(pk=2).count()
