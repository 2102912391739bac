"""The payment provider the shop calls: a stand-in HTTP service on 127.0.0.1.

With ``PAYMENTS_URL`` unset (the embedded defaults), the shop starts this stand-in itself, in
a thread of whichever process calls it first; the compose stack runs it as a service of its
own (``python -m shop.payments --port 8765``). It answers every request after 150 ms, like a
real provider on a good day.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings

DELAY_SECONDS = 0.15
_lock = threading.Lock()
_started: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(DELAY_SECONDS)
        body = json.dumps({"status": "captured"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def serve(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def url() -> str:
    """The provider's base URL: ``PAYMENTS_URL``, or a stand-in started on first use."""
    if settings.PAYMENTS_URL:
        return str(settings.PAYMENTS_URL)
    with _lock:
        if not _started:
            server = serve()
            _started.append(f"http://127.0.0.1:{server.server_address[1]}")
    return _started[0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The shop's stand-in payment provider.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    options = parser.parse_args()
    serve(options.host, options.port)
    print(f"payments stand-in on http://{options.host}:{options.port}", flush=True)
    threading.Event().wait()
