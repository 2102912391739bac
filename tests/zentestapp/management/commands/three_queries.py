"""A management command of 3 queries; ``--fail`` raises after them, ``--exit`` exits with status 1."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from zentestapp.models import Customer


class Command(BaseCommand):
    help = "3 queries, then optionally a failure"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fail", action="store_true")
        parser.add_argument("--exit", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        for pk in (1, 2, 3):
            list(Customer.objects.filter(pk=pk))
        if options["fail"]:
            raise RuntimeError("the command fails on purpose")
        if options["exit"]:
            sys.exit(1)
        self.stdout.write("done")
