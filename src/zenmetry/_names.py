"""The public names of CONTRACT.md, each written once.

Dashboards, alert rules and users depend on these strings: change one only with a
migration note in the README and the CHANGELOG.
"""

from typing import Final

# Environment variables (zenmetry's own; standard OTEL_* keep their meaning).
ENV_BUDGETS: Final = "ZENMETRY_BUDGETS"
ENV_CONSOLE: Final = "ZENMETRY_CONSOLE"
ENV_HTTP_TIMEOUT: Final = "ZENMETRY_HTTP_TIMEOUT"
ENV_MEMORY_TRACE: Final = "ZENMETRY_MEMORY_TRACE"
ENV_DB_SPANS: Final = "ZENMETRY_DB_SPANS"
ENV_DB_SPANS_RATIO: Final = "ZENMETRY_DB_SPANS_RATIO"
ENV_SERVER_TIMING: Final = "ZENMETRY_SERVER_TIMING"
ENV_COMMANDS: Final = "ZENMETRY_COMMANDS"

# The Django instrumentation's own variables, honoured by the test suite's middleware as the
# instrumentation honours them (``zenmetry.testing._django``).
ENV_DJANGO_INSTRUMENT: Final = "OTEL_PYTHON_DJANGO_INSTRUMENT"
ENV_DJANGO_MIDDLEWARE_POSITION: Final = "OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION"
ENV_DJANGO_EXCLUDED_URLS: Final = "OTEL_PYTHON_DJANGO_EXCLUDED_URLS"
ENV_EXCLUDED_URLS: Final = "OTEL_PYTHON_EXCLUDED_URLS"

DEFAULT_BUDGET_FILE: Final = "zenmetry.toml"

# Kinds of unit.
KIND_HTTP: Final = "http"
KIND_TASK: Final = "task"
KIND_COMMAND: Final = "command"
COMMAND_SCOPE: Final = "zenmetry.commands"
"""The scope of the span zenmetry opens for one run of a management command."""
COMMAND_STATUS: Final = "zen.command.status"
"""A command unit's metric point attribute: ``OK`` or ``ERROR`` (an exception, or a non-zero exit)."""
DJANGO_TASKS_SCOPE: Final = "zenmetry.django_tasks"
"""The scope of the CONSUMER span zenmetry opens for one run of a Django task."""
DJANGO_TASK_STATUS: Final = "django.task.status"
"""A Django task unit's metric point attribute: Django's final status (``SUCCESSFUL``, ``FAILED``)."""
DJANGO_TASK_BACKEND: Final = "django.task.backend"
"""The alias of the backend that ran a Django task, on its span."""
UNMATCHED: Final = "unmatched"

# Attributes on the unit span.
UNIT_KIND: Final = "zen.unit.kind"
UNIT_NAME: Final = "zen.unit.name"
DB_QUERIES: Final = "zen.db.queries"
DB_ROUND_TRIPS: Final = "zen.db.round_trips"
DB_DURATION_MS: Final = "zen.db.duration_ms"
DB_REPEATED_MAX: Final = "zen.db.repeated_max"
DB_SLOWEST_MS: Final = "zen.db.slowest_ms"
EXTERNAL_CALLS: Final = "zen.external.calls"
EXTERNAL_DURATION_MS: Final = "zen.external.duration_ms"
EXTERNAL_NO_TIMEOUT: Final = "zen.external.no_timeout"
MEMORY_RSS_DELTA: Final = "zen.memory.rss_delta_bytes"
MEMORY_SHARED: Final = "zen.memory.shared"
DURATION_MS: Final = "zen.duration_ms"
TASK_QUEUE_WAIT_MS: Final = "zen.task.queue_wait_ms"
CACHE_CALLS: Final = "zen.cache.calls"
DB_POOL_WAIT_MS: Final = "zen.db.pool_wait_ms"
CACHE_MISSES: Final = "zen.cache.misses"
BUDGET: Final = "zen.budget"
BUDGET_BREACHED: Final = "zen.budget.breached"
DB_SPANS: Final = "zen.db.spans"
DB_SPANS_EXPORTED: Final = "exported"
DB_SPANS_SUMMARIZED: Final = "summarized"
UNIT_KEPT: Final = "zen.unit.kept"
"""``true`` on the unit span of a unit that breached a limit or ended in error, and on every
span zenmetry held for its verdict: the collector keeps them whatever its sampler decides."""


def db_system_queries(system: str) -> str:
    """``zen.db.<system>.queries``."""
    return f"zen.db.{system}.queries"


def db_system_duration_ms(system: str) -> str:
    """``zen.db.<system>.duration_ms``."""
    return f"zen.db.{system}.duration_ms"


# Span events and their attributes.
EVENT_BREACH: Final = "zen.budget.breach"
EVENT_REPEATED_QUERY: Final = "zen.db.repeated_query"
EVENT_NO_TIMEOUT: Final = "zen.external.no_timeout"
EVENT_SLOW_QUERY: Final = "zen.db.slow_query"
EVENT_ALLOCATIONS: Final = "zen.memory.allocations"
MEMORY_SITES: Final = "zen.memory.sites"
MEMORY_TRACED_BYTES: Final = "zen.memory.traced_bytes"
# zenmetry's own addition (not in CONTRACT.md): a database connection configured without timeouts.
EVENT_CONFIG_NO_TIMEOUT: Final = "zen.config.no_timeout"
CONFIG_SOURCE: Final = "zen.config.source"
CONFIG_MISSING: Final = "zen.config.missing"
LIMIT: Final = "zen.limit"
LIMIT_VALUE: Final = "zen.limit.value"
ACTUAL: Final = "zen.actual"
STATEMENT_FINGERPRINT: Final = "zen.statement.fingerprint"
COUNT: Final = "zen.count"

# Call sites: OpenTelemetry's code attributes, and the Django template that ran the call.
CODE_FILE_PATH: Final = "code.file.path"
CODE_LINE_NUMBER: Final = "code.line.number"
CODE_FUNCTION_NAME: Final = "code.function.name"
TEMPLATE_NAME: Final = "zen.template.name"
TEMPLATE_LINE: Final = "zen.template.line"

# Budget sources other than an entry's own key.
BUDGET_DECORATOR: Final = "@budget"
BUDGET_DEFAULT: Final = "default"

# Metrics.
METER_NAME: Final = "zenmetry"
METRIC_DURATION: Final = "zen.unit.duration"
METRIC_DB_QUERIES: Final = "zen.unit.db.queries"
METRIC_DB_DURATION: Final = "zen.unit.db.duration"
METRIC_MEMORY_GROWTH: Final = "zen.unit.memory.growth"
METRIC_EXTERNAL_CALLS: Final = "zen.unit.external.calls"
# zenmetry's own addition (not in CONTRACT.md): what dashboards and alerts need for the
# "calls without a timeout" rule, which the contract has only as a span attribute and event.
METRIC_EXTERNAL_NO_TIMEOUT: Final = "zen.unit.external.no_timeout"
METRIC_BREACHES: Final = "zen.budget.breaches"
METRIC_QUEUE_WAIT: Final = "zen.unit.queue_wait"
# zenmetry's own addition (not in CONTRACT.md): the unit span's zen.cache.calls and
# zen.cache.misses as metrics, for the overview's "cache misses next to queries".
METRIC_CACHE_CALLS: Final = "zen.unit.cache.calls"
METRIC_CACHE_MISSES: Final = "zen.unit.cache.misses"
ALL_SYSTEMS: Final = "all"

# Semantic-convention names zenmetry reads or writes (both generations where they differ).
DB_SYSTEM: Final = "db.system"
DB_SYSTEM_NAME: Final = "db.system.name"
DB_STATEMENT: Final = "db.statement"
DB_QUERY_TEXT: Final = "db.query.text"
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_METHOD_OLD: Final = "http.method"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
HTTP_STATUS_CODE_OLD: Final = "http.status_code"
HTTP_ROUTE: Final = "http.route"
SERVER_ADDRESS: Final = "server.address"
CELERY_STATE: Final = "celery.state"
CELERY_ENQUEUED_HEADER: Final = "zenmetry_enqueued_at"
"""The Celery message header the producer records the enqueue time in (seconds since the epoch)."""
