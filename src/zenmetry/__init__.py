"""zenmetry: exact per-request and per-task figures and budgets for Django and Celery.

Start your app under ``opentelemetry-instrument`` (or call ``configure()``); every request
and task then carries its DB queries, DB time, memory growth, external calls and total
time, checked against the budgets of ``zenmetry.toml``.
"""

from zenmetry._errors import ConfigError
from zenmetry.config._budgets import budget

__version__ = "0.1.0"

__all__ = ["ConfigError", "budget", "configure"]


def configure() -> None:
    """Set up OpenTelemetry with zenmetry and instrument every installed library.

    For processes not started by ``opentelemetry-instrument``: call it in gunicorn's
    ``post_fork`` or Celery's ``worker_process_init``. It is idempotent, and a no-op in a
    process the launcher (or a parent before fork) has already configured. Bad settings
    raise ``zenmetry.ConfigError``.
    """
    # Imported here: the SDK's configuration machinery is not needed by code that only
    # decorates views with @budget, nor by the test-suite helpers.
    from zenmetry._configurator import configure as configure_sdk

    configure_sdk()
