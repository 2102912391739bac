"""A collector that refuses connections, never answers, answers 503 or 429, or answers after
5 s, for a whole run or for a while: gunicorn under ``opentelemetry-instrument`` keeps serving
every request at once with exact figures, its memory stays bounded, SIGTERM ends it within the
flush bound, and what was kept arrives once the collector is back. The collector is the test
suite's own OTLP/HTTP receiver, switched between misbehaviours (``support/otlp.py``)."""

from __future__ import annotations

import pytest

from support.faults import (
    EXIT_SECONDS,
    GRACEFUL,
    LATENCY_SECONDS,
    Traffic,
    console_units,
    stop_timed,
    unsent,
    wait_for,
    worker_rss,
)
from support.otlp import ANSWER, BLACK_HOLE, REFUSE, Mode, Receiver, delay, status
from support.processes import gunicorn, path_of

FAULTS = [REFUSE, BLACK_HOLE, status(503), status(429), delay(5)]
METRIC_SERIES = 10
"""Series of a run of one route answering 200: zenmetry's 8 (duration, queries and DB time for
``all`` and ``postgresql``, memory, external calls, calls without a timeout) and the Django
instrumentation's 2 (``http.server.duration``, ``http.server.active_requests``)."""
MIB = 1024 * 1024


@pytest.mark.usefixtures("postgres_db")
class TestCollectorDownForTheWholeRun:
    @pytest.mark.parametrize("mode", [REFUSE, BLACK_HOLE, status(503), delay(5)], ids=lambda mode: mode.name)
    def test_requests_are_served_at_once_with_exact_figures_and_sigterm_exits_within_the_bound(
        self, mode: Mode
    ) -> None:
        """24 requests of 0 to 5 queries all answer 200 well within 2 s, each console line has
        its exact figures, and SIGTERM ends gunicorn within the bound (20.7 s before), with one
        warning counting what could not be sent: every series' latest point among them."""
        with Receiver(mode) as receiver:
            server = gunicorn(receiver, "--workers", "1", *GRACEFUL, ZENMETRY_CONSOLE="1")
            traffic = Traffic.to(server)
            traffic.send([i % 6 for i in range(24)])
            output, seconds = stop_timed(server)
        assert traffic.statuses == [200] * 24
        assert max(traffic.seconds) < LATENCY_SECONDS
        assert console_units(output) == traffic.expected_console()
        assert seconds < EXIT_SECONDS, output
        ((spans, points),) = unsent(output)
        assert 0 < spans <= 24 + sum(traffic.sent)  # units and DB spans not yet exported at exit
        assert points == METRIC_SERIES


@pytest.mark.usefixtures("postgres_db")
class TestCollectorFailingForAWhile:
    def test_each_fault_in_turn_leaves_requests_fast_and_exact_and_totals_complete_once_it_is_back(self) -> None:
        """The collector is well, then fails in each way in turn, recovering in between: every
        request answers 200 within 2 s, and after each recovery the metric totals the receiver
        holds count every unit so far, with its exact queries (cumulative points: what failed
        to arrive is carried by the next export)."""
        with Receiver() as receiver:
            server = gunicorn(receiver, "--workers", "1", *GRACEFUL, ZENMETRY_CONSOLE="1")
            traffic = Traffic.to(server)

            def complete(r: Receiver) -> bool:
                total = r.total("zen.unit.db.queries", db__system="all")
                return (total.count, total.sum) == (len(traffic.sent), sum(traffic.sent))

            traffic.send([1, 2, 3, 4])
            receiver.wait(complete)
            for fault in FAULTS:
                faulted, refusals = receiver.faulted, server.output().count("Connection refused")
                receiver.switch(fault)
                traffic.send([0, 1, 2, 3, 4, 5])
                if fault is REFUSE:
                    wait_for(lambda seen=refusals: server.output().count("Connection refused") > seen, "a refusal")
                else:
                    wait_for(lambda seen=faulted: receiver.faulted > seen, f"an export meeting {fault.name}")
                receiver.switch(ANSWER)
                traffic.send([2, 3])
                receiver.wait(complete, timeout=60)
            output, _ = stop_timed(server)
        assert traffic.statuses == [200] * len(traffic.sent)
        assert max(traffic.seconds) < LATENCY_SECONDS
        assert console_units(output) == traffic.expected_console()
        for unit in receiver.units():
            n = int(path_of(unit).strip("/").split("/")[-1])
            assert unit.attributes["zen.db.queries"] == n


@pytest.mark.usefixtures("postgres_db")
class TestMemoryWhileTheCollectorHangs:
    def test_the_worker_rss_is_bounded_by_the_span_queue_not_by_the_traffic(self) -> None:
        """With a collector that never answers, 300 requests of 20 queries fill the batch
        processor's queue (2,048 spans, full after about 100 requests) and warm the worker up
        (its RSS still grows by up to 5 MiB until about the 300th request, then holds: seen
        here in steps of 150); 300 more (6,300 spans, dropped) leave the worker's RSS within
        5 MiB, every request answering within 2 s. (Before zenmetry emptied the batches of
        failed exports, the RSS grew by 8 MiB over 300 requests: ``_exit.CountingSpanExporter``.)"""
        with Receiver(BLACK_HOLE) as receiver:
            server = gunicorn(receiver, "--workers", "1", *GRACEFUL)
            traffic = Traffic.to(server)
            traffic.send([20] * 300)
            before = worker_rss(server)
            traffic.send([20] * 300)
            after = worker_rss(server)
            output, seconds = stop_timed(server)
        assert traffic.statuses == [200] * 600
        assert max(traffic.seconds) < LATENCY_SECONDS
        assert (after - before) / MIB < 5, f"{before / MIB:.1f} -> {after / MIB:.1f} MiB"
        assert "Queue full, dropping Span." in output  # the SDK says so once per 20 s
        assert seconds < EXIT_SECONDS
        ((spans, _points),) = unsent(output)
        assert 2_048 <= spans <= 2_048 + 512  # the full queue, and the batch held by the black hole
