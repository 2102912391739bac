"""The DB-API instrumentation's cursor tracer, tracing statements and commands at less cost.

Shared by the psycopg and psycopg2 integrations, and loaded only where the instrumentation
itself is (``zenmetry.testing`` traces psycopg with ``_dbapi.LeanStatements``): a span made here
has the name, kind and attributes the instrumentation's ``CursorTracer`` gives its own
(``db.system``, ``db.name``, ``db.statement``, ``db.user``, ``net.peer.*``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Final, TypeVar

from opentelemetry.instrumentation._semconv import _report_new, _set_db_name, _set_db_statement, _set_db_system
from opentelemetry.instrumentation.dbapi import CursorTracer, DatabaseApiIntegration
from opentelemetry.sdk.trace import Tracer
from opentelemetry.trace import SpanKind

from zenmetry import _guard
from zenmetry.export._held_spans import HeldSpan, HoldingTracer, holding
from zenmetry.integrations._dbapi import run_in_span, run_in_span_async
from zenmetry.units._processor import UnitProcessor
from zenmetry.units._shapes import round_trip

T = TypeVar("T")
_CLIENT: Final = SpanKind.CLIENT
_MAX_NAMES: Final = 4096
"""Operation names kept per tracer class, by statement text (ORM statements are parameterised:
the texts are few)."""


class StatementTracer(CursorTracer[Any]):
    """Mixed into a library's ``CursorTracer`` (``class Tracer(StatementTracer, library.CursorTracer)``):
    its ``execute`` traces a statement as its ``traced_execution`` does, without its generic machinery.

    ``traced_execution`` opens the span through two generator-based context managers and
    works the span's name and attributes out again for every statement, through the semantic
    conventions' helpers: about as much as the span itself costs. Here the attributes that
    depend only on the connection are worked out once, by those same helpers, the operation
    name once per statement text, and the span is opened, made current, ended and given an
    exception exactly as ``start_as_current_span`` and ``use_span`` do. A span held for its
    unit's verdict (_held) starts with them. Where the instrumentation does more than name and
    describe the span (sqlcommenter, captured parameters, the database semantic conventions'
    metrics), ``traced_execution`` runs itself.
    """

    _names: dict[str, str]
    _processor: UnitProcessor
    """The unit processor the round trips are noted for (given by ``Tracers``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._names = {}

    def __init__(self, db_api_integration: DatabaseApiIntegration) -> None:
        super().__init__(db_api_integration)
        self._lean = _connection_attributes(self)

    def execute(self, cursor: Any, method: Callable[..., T], args: Any, kwargs: Any) -> T:
        """``method(*args, **kwargs)``, a cursor's statement, inside its DB span."""
        lean = self._lean
        if lean is None:
            return self.traced_execution(cursor, method, *args, **kwargs)  # type: ignore[no-any-return]
        return run_in_span(self._start(cursor, args, lean), method, args, kwargs)

    async def execute_async(self, cursor: Any, method: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        """``await method(*args, **kwargs)``, an async cursor's statement, inside its DB span."""
        lean = self._lean
        if lean is None:
            return await self.traced_execution_async(cursor, method, *args, **kwargs)
        return await run_in_span_async(self._start(cursor, args, lean), method, args, kwargs)

    def _start(self, cursor: Any, args: Any, lean: tuple[dict[str, Any], tuple[str, ...]]) -> Any:
        """The statement's span, started, with the name and attributes ``traced_execution`` gives it."""
        statement = args[0] if args else None
        if statement.__class__ is str:
            names = self._names
            name = names.get(statement)
            if name is None:
                name = self.get_operation_name(cursor, args)
                if len(names) >= _MAX_NAMES:
                    names.clear()
                names[statement] = name
            text = statement
        else:
            name, text = self.get_operation_name(cursor, args), self.get_statement(cursor, args)
        integration = self._db_api_integration
        if not name:
            name = integration.database if integration.database else integration.name
        tracer = integration._tracer  # noqa: SLF001
        span = tracer.held_span(name) if tracer.__class__ is HoldingTracer else None
        if span is None:
            # The SDK's span (a held one's conditions are not met), or another provider's.
            if tracer.__class__ is HoldingTracer:
                span = Tracer.start_span(tracer, name, None, _CLIENT)
            else:
                span = tracer.start_span(name, kind=_CLIENT)
            if not span.is_recording():
                return span
            attributes, keys = lean
            attributes = dict(attributes)
            for key in keys:
                attributes[key] = text
            attributes.update(integration.span_attributes)
            span.set_attributes(attributes)
            return span
        if span.__class__ is not HeldSpan:
            return span  # not recorded: the sampler dropped it
        values = span._values  # noqa: SLF001
        values.update(lean[0])
        for key in lean[1]:
            values[key] = text
        values.update(integration.span_attributes)
        return span

    def command(self, target: Any, statement: str) -> Any:
        """A started span for one of the driver's own round trips (``_dbapi.call_in_span``)."""
        integration = self._db_api_integration
        name = self.get_operation_name(target, (statement,)) or integration.database or integration.name
        span = integration._tracer.start_span(name, kind=_CLIENT)  # noqa: SLF001
        try:
            self._populate_span(span, target, statement)  # type: ignore[arg-type]
            self._processor.note_shape(span, round_trip(statement))
        except Exception:  # noqa: BLE001
            _guard.swallow("a DB span's attributes")
        return span


def _connection_attributes(tracer: CursorTracer[Any]) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """What ``_populate_span`` gives every span of the tracer's connection, worked out by the
    instrumentation's own helpers: its first attributes, and the keys the statement goes under.
    None where ``traced_execution`` must run itself."""
    integration = tracer._db_api_integration  # noqa: SLF001
    try:
        mode = integration._sem_conv_opt_in_mode_db  # noqa: SLF001
        if tracer._commenter_enabled or integration.capture_parameters or _report_new(mode):  # noqa: SLF001
            return None
        first: dict[str, Any] = {}
        _set_db_system(first, integration.database_system, mode)
        _set_db_name(first, integration.database, mode)
        probe: dict[str, Any] = {}
        _set_db_statement(probe, "", mode)
    except (AttributeError, TypeError):  # not the instrumentation this was written against
        return None
    return first, tuple(probe)


class Tracers:
    """The instrumentation's cursor tracer of each connection, made at its first call and
    dropped with the connection: a cache, not state (a new one would trace the same).

    ``remember(kwargs)`` keeps what the instrumentor was given (tracer provider, sqlcommenter
    options), so the spans zenmetry makes are made as the instrumentation would make them.
    Each connection has an integration of its own, for its own attributes (upstream keeps one
    for all and overwrites them at every connect). Django opens a connection per request unless
    ``CONN_MAX_AGE`` is set, and a ``DatabaseApiIntegration`` costs about 25 us to make (its
    tracer, semantic-convention modes, commenter data): each connection's is a copy of one made
    once, with the two dicts ``get_connection_attributes`` fills of its own. The template's
    tracer makes held spans (_held) where its spans' export waits for their unit's verdict.
    """

    _processor: UnitProcessor
    """Given by ``remember``, before the first connection is traced."""

    _OPTIONS: Final = ("tracer_provider", "enable_commenter", "commenter_options", "enable_attribute_commenter")

    def __init__(self, scope: str, instrumentor: Any, module: Any, version: str, tracer: type[StatementTracer]) -> None:
        self._scope, self._instrumentor, self._module, self._version = scope, instrumentor, module, version
        self._options: dict[str, Any] = {}
        self._template: DatabaseApiIntegration | None = None
        self.tracer = tracer
        """The ``StatementTracer`` class made for each connection."""
        self._by_connection: weakref.WeakKeyDictionary[Any, StatementTracer] = weakref.WeakKeyDictionary()
        # The last connection asked for (weakly) and its tracer: statements come in runs on
        # one connection, and a weak dictionary's look-up is a Python call making a reference.
        self._last: tuple[weakref.ref[Any], StatementTracer] | None = None

    def remember(self, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        """Keep the options the instrumentor is given (its ``before`` hook), and the processor
        whose units the spans belong to."""
        self._processor = processor
        self._options.update({key: kwargs[key] for key in self._OPTIONS if key in kwargs})
        self._options["capture_parameters"] = kwargs.get("capture_parameters", False)

    def __call__(self, connection: Any) -> StatementTracer:
        last = self._last
        if last is not None and last[0]() is connection:
            return last[1]
        tracer = self._by_connection.get(connection)
        if tracer is None:
            if self._template is None:  # after the instrumentor's options are known
                self._template = DatabaseApiIntegration(
                    self._scope,
                    self._instrumentor._DATABASE_SYSTEM,  # noqa: SLF001
                    connection_attributes=self._instrumentor._CONNECTION_ATTRIBUTES,  # noqa: SLF001
                    version=self._version,
                    connect_module=self._module,
                    **self._options,
                )
                # Its spans wait for their unit's verdict as held spans (_held).
                self._template._tracer = holding(self._template._tracer, self._processor)  # noqa: SLF001
            # A copy (copy.copy is a Python walk through __reduce_ex__, 20 us; this is 1 us).
            integration = object.__new__(DatabaseApiIntegration)
            integration.__dict__.update(self._template.__dict__)
            integration.connection_props, integration.span_attributes = {}, {}
            integration.get_connection_attributes(connection)
            tracer = self._by_connection[connection] = self.tracer(integration)
            tracer._processor = self._processor  # noqa: SLF001
        self._last = (weakref.ref(connection), tracer)
        return tracer
