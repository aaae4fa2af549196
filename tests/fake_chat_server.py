"""A local OpenAI-protocol chat server for tests of the LLM simulator and the LLM state tracker.

`FakeChatServer(script)` listens on 127.0.0.1 (a free port, in a thread), records every request
body and its headers, counts concurrent requests, and answers each request as
`script(n, body)` says: ("ok", text) | ("ok", text, usage) | ("error", status, retry_after |
None) | ("hang", seconds) | ("garbage",). A reply carries an OpenAI `usage` object when the
action gives one, else when the server was started with `usage=f(body, text) -> dict`.
"""

import http.server
import json
import threading
import time

import pytest


class FakeChatServer:
    """OpenAI-protocol server; `script(n, body)` returns the action of the n-th request.

    Actions: ("ok", text) | ("ok", text, usage dict) | ("error", status, retry_after | None) |
    ("hang", seconds) | ("garbage",). `usage(body, text)`, when given, is the `usage` object of
    every "ok" reply whose action has none.
    """

    def __init__(self, script, work_s=0.0, usage=None):
        self.script = script
        self.usage = usage
        self.work_s = work_s
        self.requests = []
        self.headers = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.work_s)
                    action = server.script(n, body)
                    if action[0] == "hang":
                        time.sleep(action[1])
                        action = ("ok", "late")
                finally:
                    # A request stops counting as in flight before its reply is written: once the
                    # client has the reply it may send the next request before this thread runs
                    # again, which would otherwise count one request twice.
                    with server._lock:
                        server.in_flight -= 1
                try:
                    if action[0] == "error":
                        self.send_response(action[1])
                        if action[2] is not None:
                            self.send_header("Retry-After", str(action[2]))
                        payload = b'{"error": "scripted"}'
                    elif action[0] == "garbage":
                        self.send_response(200)
                        payload = b"not json"
                    else:
                        self.send_response(200)
                        reply = {
                            "choices": [{"message": {"role": "assistant", "content": action[1]}}]
                        }
                        usage = action[2] if len(action) > 2 else None
                        if usage is None and server.usage is not None:
                            usage = server.usage(body, action[1])
                        if usage is not None:
                            reply["usage"] = usage
                        payload = json.dumps(reply).encode()
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    """Starts `FakeChatServer(script, work_s)`s for a test and closes them after it."""
    servers = []

    def start(script, work_s=0.0, usage=None):
        s = FakeChatServer(script, work_s, usage)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()
