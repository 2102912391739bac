"""``manage.py remind_unpaid``: the nightly reminders. A management command is a unit like a
request: this one reads each unpaid order's customer one by one (N+1), and zenmetry names the
line, as it would in a view; ``select_related("customer")`` makes it one query."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from shop.models import Order


class Command(BaseCommand):
    help = "Remind the customers of unpaid orders."

    def handle(self, *args: Any, **options: Any) -> None:
        emails = [order.customer.email for order in Order.objects.filter(paid=False).order_by("pk")]
        self.stdout.write(f"{len(emails)} reminders to send")
