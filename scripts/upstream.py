#!/usr/bin/env python3
"""A tiny HTTP/1.1 upstream for the demo and the integration tests.

Every request gets 200 with the body ``upstream <METHOD> <PATH>\\n`` (path as
received, query included) and is counted. Three paths are not counted:

* ``/__upstream_stats`` answers ``{"requests": N}``;
* ``/__reset`` sets the count to zero, makes the upstream healthy again and answers
  ``{"requests": 0}``;
* ``/__behave?fail_percent=P&delay_ms=D`` makes it fail and slow on command, as a
  service that really degrades: from then on, exactly P of every 100 counted requests
  get its own ``500`` (evenly spread), and every counted request waits D ms before its
  answer. Both default to 0; it answers what it will do, as JSON.

Run it alone with ``python3 scripts/upstream.py --port 8080``; the tests import
``UpstreamServer`` and run it on a thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS_PATH = "/__upstream_stats"
RESET_PATH = "/__reset"
BEHAVE_PATH = "/__behave"


def response_body(method: str, path: str) -> bytes:
    """The body the upstream answers a counted request with."""
    return f"upstream {method} {path}\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's connection pool expects
    disable_nagle_algorithm = True
    server_version = "fault-injector-upstream"
    sys_version = ""
    server: "UpstreamServer"

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _raw_path(self) -> str:
        # self.path has leading "//" collapsed by http.server; take it as sent.
        parts = self.requestline.split(" ")
        return parts[1] if len(parts) == 3 else self.path

    def _answer(self) -> None:
        body_in = self._read_body()
        path = self._raw_path()
        status = 200
        if self.path == STATS_PATH:
            body = json.dumps({"requests": self.server.count}).encode()
            ctype = "application/json"
        elif self.path == RESET_PATH:
            self.server.reset()
            body = json.dumps({"requests": 0}).encode()
            ctype = "application/json"
        elif urlsplit(self.path).path == BEHAVE_PATH:
            query = parse_qs(urlsplit(self.path).query)
            number = lambda key: int(query.get(key, ["0"])[0])  # noqa: E731
            body = json.dumps(self.server.behave(number("fail_percent"), number("delay_ms"))).encode()
            ctype = "application/json"
        else:
            # Count before answering, so a client that got the answer sees the count.
            self.server.record(self.command, path, dict(self.headers.items()), body_in)
            fails, delay_ms = self.server.next_behaviour()
            time.sleep(delay_ms / 1000)
            status = 500 if fails else 200
            body = response_body(self.command, path)
            ctype = "text/plain"
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Internal Server Error'}\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Upstream-Body-Bytes: {len(body_in)}\r\n"
            f"\r\n"
        ).encode()
        # One write: no Nagle/delayed-ACK stall between head and body.
        self.wfile.write(head if self.command == "HEAD" else head + body)
        self.log_request(status, len(body))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib name)
        if self.server.verbose:
            sys.stderr.write(f"upstream: {self.address_string()} {format % args}\n")


class UpstreamServer(ThreadingHTTPServer):
    """Threaded upstream that records what it received."""

    daemon_threads = True
    request_queue_size = 1024  # listen backlog: many concurrent connections

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.verbose = verbose
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.fail_percent = 0
        self.delay_ms = 0
        self._answered = 0  # counted requests answered since the last /__behave
        super().__init__((host, port), _Handler)
        self.port = self.server_address[1]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.requests.append((method, path, headers, body))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.behave(0, 0)

    def behave(self, fail_percent: int = 0, delay_ms: int = 0) -> dict[str, int]:
        """From now on, `fail_percent` of every 100 counted requests get a 500 and each
        waits `delay_ms` (see the module's doc); returns both."""
        with self._lock:
            self.fail_percent, self.delay_ms, self._answered = fail_percent, delay_ms, 0
        return {"fail_percent": fail_percent, "delay_ms": delay_ms}

    def next_behaviour(self) -> tuple[bool, int]:
        """Whether the next counted request fails, and how long it waits (ms)."""
        with self._lock:
            self._answered += 1
            n, p = self._answered, self.fail_percent
            return (n * p) // 100 != ((n - 1) * p) // 100, self.delay_ms

    def start(self) -> "UpstreamServer":
        """Serve on a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args()
    server = UpstreamServer(args.host, args.port, verbose=args.verbose)
    print(f"upstream listening on {args.host}:{server.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
