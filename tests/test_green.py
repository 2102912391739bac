"""Which commands run a gevent or eventlet pool (``zenmetry._green``); the pools themselves run
under real workers in ``test_execution_models.py``."""

from __future__ import annotations

import pytest

from zenmetry._cooperative import green_library

BIN = "/venv/bin"


class TestGreenLibrary:
    @pytest.mark.parametrize(
        ("argv", "environ", "expected"),
        [
            ([f"{BIN}/celery", "-A", "proj", "worker", "-P", "gevent", "-c", "10"], {}, "gevent"),
            ([f"{BIN}/celery", "-A", "proj", "worker", "-Pgevent"], {}, "gevent"),
            ([f"{BIN}/celery", "-A", "proj", "worker", "--pool", "eventlet"], {}, "eventlet"),
            ([f"{BIN}/celery", "-A", "proj", "worker", "--pool=gevent"], {}, "gevent"),
            ([f"{BIN}/celery", "-A", "proj", "worker", "-P", "prefork"], {}, None),
            ([f"{BIN}/celery", "-A", "proj", "worker"], {}, None),
            ([f"{BIN}/celery", "-A", "proj", "worker", "-P"], {}, None),
            ([f"{BIN}/gunicorn", "app.wsgi", "-k", "gevent"], {}, "gevent"),
            ([f"{BIN}/gunicorn", "app.wsgi", "--worker-class=gunicorn.workers.ggevent.GeventWorker"], {}, "gevent"),
            ([f"{BIN}/gunicorn", "app.wsgi", "--worker-class", "eventlet"], {}, "eventlet"),
            ([f"{BIN}/gunicorn", "app.wsgi", "-k", "gunicorn.workers.geventlet.EventletWorker"], {}, "eventlet"),
            ([f"{BIN}/gunicorn", "app.wsgi"], {"GUNICORN_CMD_ARGS": "--workers 2 -k gevent"}, "gevent"),
            ([f"{BIN}/gunicorn", "app.wsgi", "-k", "gthread"], {"GUNICORN_CMD_ARGS": "-k gevent"}, None),
            ([f"{BIN}/gunicorn", "app.wsgi", "-k", "gthread"], {}, None),
            ([f"{BIN}/uvicorn", "app.asgi:application", "-P", "gevent"], {}, None),
            (["manage.py", "runserver"], {}, None),
            ([], {}, None),
        ],
    )
    def test_the_pool_is_read_from_the_command_line(
        self, argv: list[str], environ: dict[str, str], expected: str | None
    ) -> None:
        assert green_library(argv, ["/venv/bin/python", *argv], environ) == expected

    def test_python_dash_m_celery_is_read_from_the_original_command_line(self) -> None:
        """``python -m celery ... -P gevent``: ``sys.argv[0]`` is ``-m`` when the launcher runs."""
        argv = ["-m", "-A", "proj", "worker", "-P", "gevent"]
        orig = ["/venv/bin/python", "-X", "dev", "-m", "celery", "-A", "proj", "worker", "-P", "gevent"]
        assert green_library(argv, orig, {}) == "gevent"
        assert green_library(argv, ["/venv/bin/python", "-m", "mytool", "-P", "gevent"], {}) is None
