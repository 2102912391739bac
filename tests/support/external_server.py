"""A local HTTP server standing in for an external system: ``/ok``, ``/slow`` (0.2 s),
``/slow1`` (1 s) and ``/hang`` (answers after 10 s, long after any timeout under test)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAYS = {"/ok": 0.0, "/slow": 0.2, "/slow1": 1.0, "/hang": 10.0}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        delay = DELAYS.get(self.path.split("?")[0])
        if delay is None:
            self.send_error(404)
            return
        time.sleep(delay)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:
            pass  # the client gave up (timed out) first

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def external_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
