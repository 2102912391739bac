"""zenmetry: exact per-request and per-task figures and budgets for Django and Celery.

Start your app under ``opentelemetry-instrument`` (or call ``configure()``); every request
and task then carries its DB queries, DB time, memory growth, external calls and total
time, checked against the budgets of ``zenmetry.toml``.
"""

from zenmetry._budgets import budget
from zenmetry._configurator import configure
from zenmetry._errors import ConfigError

__version__ = "0.1.0"

__all__ = ["ConfigError", "budget", "configure"]
