"""A real Celery worker of the test project, on the Redis broker, exporting to the test receiver."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading

from support.otlp import Receiver
from support.processes import BIN, TESTS, assert_no_internal_error, otel_env, track

THREE = "zentestapp.tasks.three_queries"
FAILS = "zentestapp.tasks.fails"
RETRIES = "zentestapp.tasks.retries"
QUERIES = "zentestapp.tasks.queries"


def start_worker(
    receiver: Receiver,
    task_queue: str,
    *args: str,
    launcher: bool = True,
    app: str = "zentestapp.celery_app",
    **env: str,
) -> Worker:
    command = [
        str(BIN / "celery"),
        "-A",
        app,
        "worker",
        "--queues",
        task_queue,
        "--loglevel",
        "info",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        *args,
    ]
    if launcher:
        command = [str(BIN / "opentelemetry-instrument"), *command]
    process = track(
        subprocess.Popen(
            command,
            env=otel_env(receiver, **env),
            cwd=TESTS,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while True:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            process.kill()
            raise AssertionError("the worker did not become ready:\n" + "".join(output)) from None
        if " ready." in line:
            break
    return Worker(process, output, reader)


class Worker:
    """A running worker; ``stop()`` ends it with a warm shutdown and returns what it printed."""

    def __init__(self, process: subprocess.Popen[str], output: list[str], reader: threading.Thread) -> None:
        self.process = process
        self.output = output
        self.reader = reader

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        output = "".join(self.output)
        assert_no_internal_error(output)
        return output


def send_via(broker: str, task_queue: str, name: str, *args: object) -> None:
    """Send a task by name through ``broker`` (a fresh connection: the broker may have restarted)."""
    from zentestapp.celery_app import app

    with app.connection_for_write(broker) as connection:
        app.send_task(name, args=list(args), queue=task_queue, connection=connection)


def units_named(receiver: Receiver, name: str) -> list:
    return [unit for unit in receiver.units() if unit.attributes["zen.unit.name"] == name]
