"""What ``pytest --zenmetry`` (and ``--zenmetry-snapshot`` on top) adds to the run time of a Django test suite.

Writes throwaway Django projects on PostgreSQL (pytest-django) with 200 tests each, a light
suite (one small JSON request per test) and a typical one (fixtures creating a few rows, a
template-rendered page, content checks), and runs each without the plugin, with ``--zenmetry``
and with ``--zenmetry --zenmetry-snapshot`` (comparing against snapshots recorded beforehand) in
alternating rounds; prints the median CPU time of the pytest process (user + system: far
steadier than wall time on two shared cores) and of the wall time, and the ratios (targets:
the plugin under 10 % more CPU, snapshots at most 3 % more on top).

    python benchmarks/pytest_plugin.py [--rounds 7] [--instructions]

``--instructions`` runs each mode once more under valgrind's callgrind and prints the ratios of
the instructions the pytest process executed: exact and repeatable where CPU times swing by
tens of percent (a machine shared with other work), though blind to cache misses and the kernel.
It also counts a run of one test without and with ``--zenmetry``, which splits what the plugin
adds into what a session pays once (imports, instrumenting) and what each test pays.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TESTS = 200

COMMON = {
    "pytest.ini": "[pytest]\nDJANGO_SETTINGS_MODULE = bench.settings\npythonpath = .\n",
    # No slow_query_ms: under callgrind (--instructions) a statement takes fifty times as long.
    "zenmetry.toml": "[http]\nqueries = 10\nslow_query_ms = 0\n",
    "bench/__init__.py": "",
    "bench/settings.py": """
        SECRET_KEY = "x"
        ALLOWED_HOSTS = ["*"]
        ROOT_URLCONF = "bench.urls"
        INSTALLED_APPS = ["django.contrib.contenttypes", "bench"]
        USE_TZ = True
        DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
        TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": ["templates"]}]
        DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "zen_plugin_bench",
                                 "USER": "postgres", "HOST": "127.0.0.1",
                                 "OPTIONS": {"options": "-c TimeZone=UTC -c statement_timeout=10000", "connect_timeout": 10}}}
    """,
    "bench/models.py": """
        from django.db import models

        class Customer(models.Model):
            name = models.CharField(max_length=50)

        class Order(models.Model):
            customer = models.ForeignKey(Customer, on_delete=models.CASCADE)

        class Line(models.Model):
            order = models.ForeignKey(Order, related_name="lines", on_delete=models.CASCADE)
            sku = models.CharField(max_length=20)
            quantity = models.IntegerField()
    """,
    "bench/migrations/__init__.py": "",
    "bench/migrations/0001_initial.py": """
        from django.db import migrations, models

        class Migration(migrations.Migration):
            initial = True
            operations = [
                migrations.CreateModel(name="Customer", fields=[
                    ("id", models.AutoField(primary_key=True, serialize=False)), ("name", models.CharField(max_length=50))]),
                migrations.CreateModel(name="Order", fields=[
                    ("id", models.AutoField(primary_key=True, serialize=False)),
                    ("customer", models.ForeignKey(on_delete=models.CASCADE, to="bench.customer"))]),
                migrations.CreateModel(name="Line", fields=[
                    ("id", models.AutoField(primary_key=True, serialize=False)), ("sku", models.CharField(max_length=20)),
                    ("quantity", models.IntegerField()),
                    ("order", models.ForeignKey(on_delete=models.CASCADE, related_name="lines", to="bench.order"))]),
            ]
    """,
    "bench/urls.py": """
        from django.http import JsonResponse
        from django.shortcuts import get_object_or_404, render
        from django.urls import path
        from bench.models import Customer, Line, Order

        def page(request, n):
            return JsonResponse({"count": Customer.objects.count(), "exists": Customer.objects.filter(name="a").exists(),
                                 "first": Customer.objects.filter(pk=n).values_list("name", flat=True).first()})

        def order(request, pk):
            order = get_object_or_404(Order.objects.select_related("customer"), pk=pk)
            lines = order.lines.order_by("sku")
            others = Order.objects.filter(customer=order.customer).exclude(pk=pk).count()
            return render(request, "order.html", {"order": order, "lines": lines, "others": others,
                                                  "total": sum(line.quantity for line in lines)})

        urlpatterns = [path("page/<int:n>/", page), path("orders/<int:pk>/", order)]
    """,
    "templates/order.html": """
        <h1>Order {{ order.pk }} for {{ order.customer.name }}</h1>
        <table>{% for line in lines %}<tr><td>{{ line.sku }}</td><td>{{ line.quantity }}</td></tr>{% endfor %}</table>
        <p>{{ total }} items; {{ others }} other orders</p>
    """,
}

FIRST = {"light": "test_bench.py::test_page[0]", "typical": "test_bench.py::test_order_page[0]"}
"""One test of each suite: a run of it alone is what a session pays once, plus one test."""

SUITES = {
    # The lightest suite there is: one small JSON request per test (3 queries).
    "light": f"""
        import pytest
        from bench.models import Customer

        @pytest.mark.django_db
        @pytest.mark.parametrize("n", range({TESTS}))
        def test_page(client, n):
            Customer.objects.create(name="a")
            assert client.get(f"/page/{{n}}/").status_code == 200
    """,
    # A more typical one: fixtures create a customer, two orders and lines; the test renders a
    # template-based page (3 queries) and checks its content.
    "typical": f"""
        import pytest
        from bench.models import Customer, Line, Order

        @pytest.fixture
        def order(db):
            customer = Customer.objects.create(name="Ada")
            Order.objects.create(customer=customer)
            order = Order.objects.create(customer=customer)
            Line.objects.bulk_create([Line(order=order, sku=f"SKU-{{i}}", quantity=i) for i in range(1, 6)])
            return order

        @pytest.mark.parametrize("n", range({TESTS}))
        def test_order_page(client, order, n):
            response = client.get(f"/orders/{{order.pk}}/")
            assert response.status_code == 200
            assert b"Order" in response.content and b"15 items; 1 other orders" in response.content
            assert response.content.count(b"<tr>") == 5
    """,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--instructions", action="store_true", help="also count instructions with valgrind")
    args = parser.parse_args()
    for suite, tests in SUITES.items():
        measure(suite, tests, args.rounds, args.instructions)


def measure(suite: str, tests: str, rounds: int, instructions: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="zen-plugin-bench-") as folder:
        root = Path(folder)
        for name, text in {**COMMON, "test_bench.py": tests}.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(textwrap.dedent(text))
        # As on a developer's machine: bytecode (and pytest's rewritten modules) cached between runs.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "ZENMETRY_", "OTEL_")) and key != "PYTHONDONTWRITEBYTECODE"
        }
        run(root, env, "--create-db")  # creates the test database once; later runs reuse it
        run(root, env, "--zenmetry-snapshot")  # records the snapshots the measured runs compare with
        modes = {
            "without": [],
            "--zenmetry": ["--zenmetry"],
            "+ snapshots": ["--zenmetry", "--zenmetry-snapshot-strict"],
        }
        cpu: dict[str, list[float]] = {label: [] for label in modes}
        wall: dict[str, list[float]] = {label: [] for label in modes}
        for _ in range(rounds):
            for label, extra in modes.items():
                seconds, used = run(root, env, *extra)
                wall[label].append(seconds)
                cpu[label].append(used)
        print(f"{suite} suite: {TESTS} Django tests, {rounds} alternating rounds (medians, min-max):")
        for label, used in cpu.items():
            print(
                f"  {label:<12} CPU {statistics.median(used):.2f} s ({min(used):.2f}-{max(used):.2f}),"
                f" wall {statistics.median(wall[label]):.2f} s"
            )
        base_cpu, base_wall = statistics.median(cpu["without"]), statistics.median(wall["without"])
        by_cpu = statistics.median(cpu["--zenmetry"]) / base_cpu - 1
        by_wall = statistics.median(wall["--zenmetry"]) / base_wall - 1
        print(f"  the plugin adds {100 * by_cpu:.1f} % CPU time ({100 * by_wall:.1f} % wall time); target: under 10 %")
        more_cpu = (statistics.median(cpu["+ snapshots"]) - statistics.median(cpu["--zenmetry"])) / base_cpu
        more_wall = (statistics.median(wall["+ snapshots"]) - statistics.median(wall["--zenmetry"])) / base_wall
        print(
            f"  snapshots add {100 * more_cpu:.1f} % more CPU time ({100 * more_wall:.1f} % wall time)"
            " of the run without the plugin; target: at most 3 %"
        )
        # Each round's own ratios: the three runs of a round meet the same load on this machine.
        plugin = [z / w - 1 for z, w in zip(cpu["--zenmetry"], cpu["without"], strict=True)]
        snaps = [(s - z) / w for s, z, w in zip(cpu["+ snapshots"], cpu["--zenmetry"], cpu["without"], strict=True)]
        print(
            f"  by round (median, min-max): the plugin {100 * statistics.median(plugin):.1f} %"
            f" ({100 * min(plugin):.1f} to {100 * max(plugin):.1f}), snapshots {100 * statistics.median(snaps):.1f} %"
            f" more ({100 * min(snaps):.1f} to {100 * max(snaps):.1f})"
        )
        if instructions:
            counted = {label: count_instructions(root, env, *extra) for label, extra in modes.items()}
            base = counted["without"]
            print(
                f"  instructions (callgrind, one run each): without {base / 1e9:.2f} G; the plugin adds"
                f" {100 * (counted['--zenmetry'] / base - 1):.1f} %, snapshots"
                f" {100 * (counted['+ snapshots'] - counted['--zenmetry']) / base:.1f} % more"
            )
            one = {
                label: count_instructions(root, env, *modes[label], FIRST[suite]) for label in ("without", "--zenmetry")
            }
            once = one["--zenmetry"] - one["without"]
            each = (counted["--zenmetry"] - counted["without"] - once) / (TESTS - 1)
            print(
                f"  of what the plugin adds, paid once per session: {once / 1e6:.0f} M; per test:"
                f" {each / 1e6:.2f} M, on top of the {(base - one['without']) / (TESTS - 1) / 1e6:.2f} M a test costs without it"
            )


def run(root: Path, env: dict[str, str], *extra: str) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one pytest run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--reuse-db", *extra],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def count_instructions(root: Path, env: dict[str, str], *extra: str) -> int:
    """Instructions one pytest run executed in its own process (valgrind's callgrind)."""
    out = root / "callgrind.out"
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--reuse-db",
            *extra,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
    summary = next(line for line in out.read_text().splitlines() if line.startswith("summary:"))
    out.unlink()
    return int(summary.split()[1])


if __name__ == "__main__":
    main()
