"""What a unit traced by ``ZENMETRY_MEMORY_TRACE`` costs: the same unit, traced and not.

The unit builds and keeps the example shop's report (200,000 small dicts, about 37 MiB), a
memory-keeping unit as a breach would arm; alternating rounds, CPU time of this process, medians
with min-max. Run: ``python benchmarks/memtrace.py``.
"""

from __future__ import annotations

import statistics
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from zenmetry.config._settings import Settings
from zenmetry.units._processor import UnitProcessor

ROUNDS = 7


def main() -> None:
    kept: list[object] = []
    provider = TracerProvider()
    tracer = provider.get_tracer("bench")

    def unit(processor: UnitProcessor, name: str) -> tuple[float, int]:
        start = time.process_time()
        with tracer.start_as_current_span("GET", kind=SpanKind.SERVER) as span:
            processor.note_unit(span, name, None)
            kept.append([{"order": i, "line": j, "note": "x" * 64} for i in range(5000) for j in range(40)])
            processor.finish(span, name, {})
        seconds = time.process_time() - start
        kept.clear()
        return seconds, 0

    plain, traced = [], []
    for round_ in range(ROUNDS):
        for mode, results in (("off", plain), (1.0, traced)):
            processor = UnitProcessor(Settings(memory_trace=mode))
            provider._active_span_processor._span_processors = (processor,)  # noqa: SLF001 - one processor per round
            results.append(unit(processor, f"report-{round_}")[0])
    for label, values in (("untraced", plain), ("traced", traced)):
        print(
            f"{label:>9}: {statistics.median(values) * 1e3:7.1f} ms CPU  (min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f})"
        )
    ratios = [t / p for t, p in zip(traced, plain, strict=True)]
    print(
        f"traced / untraced: {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f}); "
        f"+{(statistics.median(traced) - statistics.median(plain)) * 1e3:.0f} ms for 200,000 allocations kept"
    )


if __name__ == "__main__":
    main()
