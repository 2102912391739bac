"""Run the test project's pages and blocks in this process, instrumented one of two ways, and
print each unit the processor finished: ``testing`` (``zenmetry.testing``: zenmetry's own Django
middleware and psycopg tracing, lean spans) or ``harness`` (the instrumentations themselves on
the SDK, as in production). ``test_testing.py`` compares the two outputs.

    python -m support.parity testing|harness
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from support.external_server import external_server

PAGES = [
    "/queries/3/",
    "/orm/",
    "/nplusone/",
    "/cbv/",
    "/decorated/2/",
    "/decorated/3/",  # over its @budget(queries=2)
    "/api/v1/customers/2/",
    "/boom/",  # an exception: a 500
    "/no/such/page/",  # no route: a 404
    "/stream/1/2/",  # streamed: the body's queries belong to the request
    "/threads/2/",  # threads the view starts: their queries too
    "/fanout/3/",  # a thread pool's
    "/count/block/atomic/",
    "/count/block/savepoints/",
    "/count/block/update_or_create/",
    "/count/block/iterator/",
    "/count/block/transactions/",
    "/count/block/empty_atomic/",
    "/external/urllib/ok/?timeout=5",  # the first call of urllib: its instrumentation loads then
    "/external/urllib/ok/",  # no timeout
    "/external/requests/ok/?timeout=5",
]
ASGI_PAGES = ["/async/2/", "/queries/1/", "/no/such/page/"]
"""Through Django's ASGI handler (its async test client), one after the other."""


def main(mode: str) -> None:
    with external_server() as url:
        os.environ["ZEN_TEST_EXTERNAL_URL"] = url
        run(mode)


def run(mode: str) -> None:
    if mode == "testing":
        from zenmetry import testing

        processor = testing.start()
    else:
        from support import harness

        processor = harness.instrument().processor
        processor.keep_statements()
    import django

    django.setup()
    from django.contrib.contenttypes.models import ContentType
    from django.test import AsyncClient, Client

    from zencountapp.models import Shop

    ContentType.objects.get_for_model(Shop)  # looked up once per process: before, not in a unit
    finished: list[object] = []
    processor.listeners.append(lambda unit, span: finished.append(unit))
    client = Client(raise_request_exception=False)
    for page in PAGES:
        response = client.get(page)
        b"".join(response) if response.streaming else response.content
        response.close()

    async def through_asgi() -> None:
        asgi = AsyncClient(raise_request_exception=False)
        for page in ASGI_PAGES:
            await asgi.get(page)

    asyncio.run(through_asgi())
    client.get(PAGES[0])  # and through WSGI again after it
    for unit in finished:
        figures = unit.figures  # type: ignore[attr-defined]
        # q: a query, r: a round trip, qr: both
        statements = [(s.system, s.text, "q" * s.query + "r" * s.round_trip) for s in figures.statements or ()]
        calls = [figures.external_calls, figures.no_timeout]
        checked = [figures.repeated_max, sorted(b.limit for b in unit.breaches)]  # type: ignore[attr-defined]
        print(
            json.dumps(
                [
                    figures.kind,
                    figures.name,
                    dict(unit.point),
                    [figures.queries, figures.round_trips],
                    statements,
                    calls,
                    checked,
                ]
            )
        )  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1])
