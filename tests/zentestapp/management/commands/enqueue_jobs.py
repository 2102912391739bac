"""Enqueue Django tasks for ``db_worker`` (the tests run it without zenmetry, as a producer that
knows nothing of it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from zentestapp import jobs


class Command(BaseCommand):
    help = "Enqueue Django tasks"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task", choices=["three_queries", "fails", "over_its_budget"])
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--run-after", type=float, default=0, help="seconds from now the task becomes due")

    def handle(self, *args: Any, **options: Any) -> None:
        task = getattr(jobs, options["task"])
        if options["run_after"]:
            task = task.using(run_after=timezone.now() + timedelta(seconds=options["run_after"]))
        for i in range(options["count"]):
            task.enqueue(*([i + 1] if options["task"] == "three_queries" else []))
        self.stdout.write(f"enqueued {options['count']}")
