"""A real HTTP lock bridge on loopback for tests: records requests, can answer slowly or with an error."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LockBridge:
    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.delay = 0.0
        self.status = 200
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                bridge.requests.append({"method": self.command, "path": self.path,
                                        "headers": dict(self.headers), "body": body, "t": time.monotonic()})
                time.sleep(bridge.delay)
                try:
                    self.send_response(bridge.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (timeout test)

            do_GET = do_POST = do_PUT = do_PATCH = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LockBridge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
