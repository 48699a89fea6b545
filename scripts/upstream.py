#!/usr/bin/env python3
"""A tiny HTTP/1.1 upstream for the demo and the integration tests.

Every request gets 200 with the body ``upstream <METHOD> <PATH>\\n`` (path as
received, query included) and is counted. Two paths are not counted:

* ``/__upstream_stats`` answers ``{"requests": N}``;
* ``/__reset`` sets the count to zero and answers ``{"requests": 0}``.

Run it alone with ``python3 scripts/upstream.py --port 8080``; the tests import
``UpstreamServer`` and run it on a thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS_PATH = "/__upstream_stats"
RESET_PATH = "/__reset"


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
        if self.path == STATS_PATH:
            body = json.dumps({"requests": self.server.count}).encode()
            ctype = "application/json"
        elif self.path == RESET_PATH:
            self.server.reset()
            body = json.dumps({"requests": 0}).encode()
            ctype = "application/json"
        else:
            # Count before answering, so a client that got the answer sees the count.
            self.server.record(self.command, path, dict(self.headers.items()), body_in)
            body = response_body(self.command, path)
            ctype = "text/plain"
        head = (
            f"HTTP/1.1 200 OK\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Upstream-Body-Bytes: {len(body_in)}\r\n"
            f"\r\n"
        ).encode()
        # One write: no Nagle/delayed-ACK stall between head and body.
        self.wfile.write(head if self.command == "HEAD" else head + body)
        self.log_request(200, len(body))

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
