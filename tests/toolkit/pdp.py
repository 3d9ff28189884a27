"""A stand-in decision point over real HTTP on 127.0.0.1: answers what the test sets, records what it got.

For the client's own behaviour (what it sends, how it reads odd answers, timeouts); the decisions
themselves are tested against Gatehouse's real decision API in test_end_to_end.py.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandInPDP:
    def __init__(self):
        self.status = 200
        self.answer: object = {"decision": True, "context": {"decision_id": "d-1"}}
        self.raw: bytes | None = None
        self.delay = 0.0
        self.requests: list[dict] = []
        pdp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                pdp.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body or b"null")}
                )
                if pdp.delay:
                    time.sleep(pdp.delay)
                data = pdp.raw if pdp.raw is not None else json.dumps(pdp.answer).encode()
                try:
                    self.send_response(pdp.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout tests)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/access/v1/evaluation"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def deny(self, **context):
        self.answer = {"decision": False, "context": {"decision_id": "d-2", **context}}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
