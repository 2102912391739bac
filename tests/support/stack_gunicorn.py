"""gunicorn settings for the stack tests: each worker serves its own metrics to Prometheus.

With ``OTEL_METRICS_EXPORTER=prometheus`` the launcher configures the SDK in gunicorn's master
and starts the exporter's HTTP server there; threads do not survive fork, so the worker, whose
copy of the meter provider records the units, starts its own server on another port.
"""

import os


def post_fork(server: object, worker: object) -> None:
    from prometheus_client import start_http_server

    start_http_server(int(os.environ["ZEN_TEST_WORKER_METRICS_PORT"]), addr="127.0.0.1")
