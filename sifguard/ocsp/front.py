"""The responder's HTTP front: one asyncio event loop per worker process that reads each
request COMPLETELY under total deadlines before the WSGI application sees it.

A slow or silent client therefore costs a few kilobytes and a place in a sweep of
deadlines, never the process that signs answers: the application is called only with a whole request in
memory and returns in milliseconds. Deadlines are totals, not per read (a byte every
second does not extend them):

- head: the request line and headers within `head_timeout` of the connection opening
  (or of the previous answer on a kept-alive connection) — idle connections included;
- body: the Content-Length body within `body_timeout` of the end of the head;
- write: an answer the client does not read within `write_timeout` closes the connection
  (and while it is unread, nothing more is read from that client);
- lingering close: after a final answer the connection is half-closed and drained for at
  most `linger_timeout`, so a client still sending (an oversized body) reads the answer
  instead of a reset.

Connections are bounded per worker in total and per peer address. At either bound a new
connection does not wait: it takes the place of the connection of that peer (or of any
peer, at the total bound) that has been waiting longest for its request to complete — a
legitimate request completes in milliseconds, so it is never the one evicted — or, when
even that one is younger than half a second, the new connection is closed instead, so a
flood of connections cannot cut short requests still arriving.
"""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import sys
import time
from dataclasses import dataclass
from urllib.parse import unquote

from sifguard.ocsp import http1


@dataclass(frozen=True)
class Limits:
    head_timeout: float = 5.0
    body_timeout: float = 5.0
    write_timeout: float = 5.0
    linger_timeout: float = 2.0
    app_timeout: int = 20                 # seconds in the application before the worker is replaced
    max_connections: int = 2048           # per worker process
    max_per_peer: int = 64                # per worker process and peer address
    min_evict_age: float = 0.5            # a connection younger than this is never evicted
    max_requests_per_connection: int = 1000
    max_body: int = 64 * 1024             # larger bodies are not read (the application refuses them)
    linger_bytes: int = 4 << 20


HEAD, BODY, LINGER, CLOSED = range(4)
PIPELINE_TURN = 8          # pipelined answers in a row before other connections' turn
SEND_BUFFER = 16 * 1024    # kernel send buffer per connection (Linux doubles it): what a non-reader pins


class Front:
    """Per-worker state: the WSGI application, the limits and the open connections."""

    def __init__(self, app, limits: Limits, server_name: str, server_port: int, access_log: bool = False):
        self.app, self.limits = app, limits
        self.server_name, self.server_port = server_name, str(server_port)
        self.access_log = access_log
        self.conns: dict[Connection, None] = {}            # insertion-ordered
        self.by_peer: dict[str, dict[Connection, None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, tick: float = 0.25) -> None:
        """Deadlines are checked by one sweep every `tick` seconds (not a timer per
        connection and phase: re-arming timers costs more than the whole sweep)."""
        self.loop = loop
        self.tick = tick
        loop.call_later(tick, self._sweep)

    def _sweep(self) -> None:
        try:
            now = time.monotonic()
            for conn in [c for c in self.conns if c.deadline <= now]:
                try:
                    conn._expired()
                except Exception:  # noqa: BLE001 - a connection that cannot even fail cleanly goes
                    conn.abort()
        finally:
            self.loop.call_later(self.tick, self._sweep)

    def protocol(self) -> "Connection":
        return Connection(self)

    def admit(self, conn: "Connection") -> bool:
        """Take the connection, making room at a bound by evicting the connection that
        has waited longest — unless even that one is younger than `min_evict_age`: then
        the newcomer is refused, so a flood of new connections can never cut short
        requests that are still arriving."""
        if len(self.by_peer.get(conn.peer, ())) >= self.limits.max_per_peer:
            if not self._evict(self.by_peer[conn.peer]):
                return False
        if len(self.conns) >= self.limits.max_connections:
            if not self._evict(self.conns):
                return False
        self.conns[conn] = None
        self.by_peer.setdefault(conn.peer, {})[conn] = None
        return True

    def _evict(self, pool: dict) -> bool:
        victim = min(pool, key=lambda c: c.waiting_since, default=None)
        if victim is None or victim.waiting_since > time.monotonic() - self.limits.min_evict_age:
            return False
        victim.abort()
        return True

    def forget(self, conn: "Connection") -> None:
        self.conns.pop(conn, None)
        peers = self.by_peer.get(conn.peer)
        if peers is not None:
            peers.pop(conn, None)
            if not peers:
                del self.by_peer[conn.peer]


class Connection(asyncio.Protocol):
    def __init__(self, front: Front):
        self.front = front
        self.limits = front.limits
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = HEAD
        self.head: http1.RequestHead | None = None
        self.deadline = float("inf")
        self.waiting_since = time.monotonic()
        self.served = 0
        self.paused = False
        self.close_after = False
        self.lingered = 0
        self.peer = "?"
        self.peer_port = "0"

    # --- deadlines ------------------------------------------------------------------
    def _deadline(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def _expired(self) -> None:
        if self.state in (HEAD, BODY) and (self.buf or self.state == BODY) and not self.paused:
            self._fail(408)        # a request begun but not finished in time: say so, then close
            return
        self.abort()

    def abort(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.front.forget(self)
        if self.transport is not None:
            self.transport.abort()       # never close(): it would wait for an unread answer to drain

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer, self.peer_port = str(peer[0]), str(peer[1])
        transport.set_write_buffer_limits(high=32 * 1024)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:
                pass
        if not self.front.admit(self):
            self.state = CLOSED
            transport.abort()
            return
        self._deadline(self.limits.head_timeout)

    def connection_lost(self, exc):
        if self.state != CLOSED:
            self.state = CLOSED
            self.front.forget(self)
        self.transport = None

    def eof_received(self):
        # The client sent all it will send. Keep the transport open (return True) until
        # the answers already written have drained; the deadline bounds the wait.
        if self.state != LINGER:
            self._linger()
        if self.transport is not None and self.transport.get_write_buffer_size() == 0:
            self.abort()
        return True

    def pause_writing(self):
        self.paused = True
        self.transport.pause_reading()
        self._deadline(self.limits.write_timeout)

    def resume_writing(self):
        self.paused = False
        if self.state == CLOSED:
            return
        if self.state == LINGER:
            self._deadline(self.limits.linger_timeout)
            return
        self.transport.resume_reading()
        self._deadline(self.limits.head_timeout if self.state == HEAD else self.limits.body_timeout)
        self._advance()

    def data_received(self, data):
        if self.state == LINGER:
            self.lingered += len(data)
            if self.lingered > self.limits.linger_bytes:
                self.abort()
            return
        if self.state == CLOSED:
            return
        self.buf += data
        self._advance()

    # --- request processing -------------------------------------------------------------
    def _advance(self) -> None:
        """Answer the complete requests in the buffer, in order, while the client reads;
        after PIPELINE_TURN answers the other connections get their turn first."""
        turn = PIPELINE_TURN
        while not self.paused and self.state in (HEAD, BODY):
            if turn == 0:
                self.transport.pause_reading()
                self.front.loop.call_soon(self._next_turn)
                return
            turn -= 1
            if self.state == HEAD:
                end = self.buf.find(http1.HEAD_END)
                if end < 0:
                    if len(self.buf) > http1.MAX_HEAD:
                        self._fail(431)
                    return
                if end > http1.MAX_HEAD:
                    self._fail(431)
                    return
                try:
                    self.head = http1.parse_head(bytes(self.buf[:end]))
                except http1.BadRequest as e:
                    self._fail(e.status)
                    return
                del self.buf[:end + 4]
                n = self.head.content_length
                if n > self.limits.max_body:
                    self.close_after = True       # not read: answered, then a lingering close
                    self._dispatch(b"")
                    return
                if n:
                    self.state = BODY
                    self._deadline(self.limits.body_timeout)
                    if self.head.expect_continue and len(self.buf) < n:
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    continue
                self._dispatch(b"")
            else:
                n = self.head.content_length
                if len(self.buf) < n:
                    return
                body = bytes(self.buf[:n])
                del self.buf[:n]
                self._dispatch(body)

    def _next_turn(self) -> None:
        if self.state in (HEAD, BODY) and not self.paused:
            self.transport.resume_reading()
            self._advance()

    def _fail(self, code: int) -> None:
        self.transport.write(http1.error_response(code))
        self._linger()

    def _dispatch(self, body: bytes) -> None:
        head = self.head
        self.served += 1
        keep = (head.keep_alive and not self.close_after
                and self.served < self.limits.max_requests_per_connection)
        status, headers, payload = self._call_app(head, body)
        code = status[:3]
        no_body = head.method == "HEAD" or code in ("304", "204") or code.startswith("1")
        self.transport.write(http1.response_head(status, headers, len(payload), keep, head.version,
                                                 send_length=code not in ("304", "204"))
                             + (b"" if no_body else payload))
        if self.front.access_log:
            print(f'{self.peer} "{head.method} {head.target[:200]} {head.version}" {code} {len(payload)}',
                  file=sys.stderr, flush=True)
        if not keep:
            if not self.close_after and not self.buf and not self.transport.get_write_buffer_size():
                # the whole request was read and the answer is in the kernel's hands: a plain
                # close sends it and a FIN (no reset: nothing unread), without another wake-up
                self.state = CLOSED
                self.front.forget(self)
                self.transport.close()
                return
            self._linger()
            return
        self.state = HEAD
        self.head = None
        self.waiting_since = time.monotonic()
        self._deadline(self.limits.write_timeout if self.paused else self.limits.head_timeout)

    def _linger(self) -> None:
        """Half-close after the final answer and drain what the client still sends."""
        self.state = LINGER
        self.buf.clear()
        self.waiting_since = 0.0           # first to go when a slot is needed
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline(self.limits.write_timeout if self.paused else self.limits.linger_timeout)

    def _call_app(self, head: http1.RequestHead, body: bytes):
        path, _, query = head.target.partition("?")
        if path.startswith(("http://", "https://")):            # absolute-form
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        environ = {
            "REQUEST_METHOD": head.method, "SCRIPT_NAME": "", "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query, "REQUEST_URI": head.target, "RAW_URI": head.target,
            "SERVER_NAME": self.front.server_name, "SERVER_PORT": self.front.server_port,
            "SERVER_PROTOCOL": head.version, "REMOTE_ADDR": self.peer, "REMOTE_PORT": self.peer_port,
            "CONTENT_LENGTH": str(head.content_length) if head.content_length else "",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in head.headers:
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name != "content-length":
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = environ[key] + "," + value if key in environ else value
        started: list = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        signal.setitimer(signal.ITIMER_REAL, self.limits.app_timeout)   # a stuck worker dies and is replaced
        try:
            result = self.front.app(environ, start_response)
            try:
                payload = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception as e:  # noqa: BLE001 - the application's own guard failed: 500, keep serving
            print(f"sifguard ca serve: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return "500 Internal Server Error", [("Content-Type", "text/plain")], b"internal error\n"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not started:
            return "500 Internal Server Error", [("Content-Type", "text/plain")], b"internal error\n"
        return started[0], started[1], payload
