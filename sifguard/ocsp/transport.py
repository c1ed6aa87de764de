"""Bounded fetches of revocation data: every exchange ends by a deadline and reads at most a cap.

requests' `timeout` bounds each socket operation, not the exchange: a peer that trickles
its headers or body one byte a second never trips it. So each HTTP exchange runs in a
short-lived worker thread and the caller waits for it on an Event for the time left. The
worker registers a dup() of every socket it opens (a custom urllib3 connection class,
mounted through a requests HTTPAdapter); at the deadline the caller shuts those sockets
down, which makes whatever the worker is blocked in — TLS handshake, header line, body
read — return at once. The caller therefore regains control at the deadline whatever the
peer does, and the worker does not outlive it (a DNS lookup aside: it cannot be
interrupted, ends with the resolver's own timeout, and its result is thrown away).

Bodies are read raw (no Content-Encoding decoding, `Accept-Encoding: identity`: a gzip
bomb stays a small non-DER blob), in chunks, never more than cap + 1 bytes; a
Content-Length above the cap is refused before any of the body is read. No proxy or
netrc from the environment (`trust_env = False`), no redirects, no connection reuse.

`file://` (and absolute-path) CRLs: only regular files (opened non-blocking, so a FIFO
cannot hang the open), at most cap + 1 bytes read.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from urllib.parse import unquote, urlsplit

from sifguard import fileio
from sifguard.ocsp.answers import RevocationError

_CHUNK = 64 << 10
_local = threading.local()


# --- files -------------------------------------------------------------------------
def read_regular_file(path: str, cap: int) -> bytes:
    """The whole of a regular file of at most `cap` bytes (never reads more than cap + 1)."""
    try:
        return fileio.read_regular(path, cap)
    except fileio.FileReadError as e:
        raise RevocationError(str(e)) from None


def file_url_path(url: str) -> str | None:
    """The local path of a file:// URL (or an absolute path), None for other URLs."""
    if url.startswith("/"):
        return url
    if not url.startswith("file:"):
        return None
    u = urlsplit(url)
    if u.netloc not in ("", "localhost") or not u.path.startswith("/"):
        raise RevocationError(f"{url}: only local absolute file:// URLs are read")
    return unquote(u.path)


# --- HTTP --------------------------------------------------------------------------
class _Exchange:
    """The sockets one exchange opened, so that the deadline can shut them down."""

    def __init__(self):
        self.lock = threading.Lock()
        self.guards: list[socket.socket] = []
        self.cancelled = False
        self.done = threading.Event()
        self.result: bytes | None = None
        self.error: BaseException | None = None

    def register(self, sock: socket.socket) -> None:
        guard = sock.dup()    # shutdown() acts on the socket, whichever descriptor names it
        with self.lock:
            if not self.cancelled:
                self.guards.append(guard)
                return
        _shut(guard)          # opened after the deadline: end it at once

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            guards, self.guards = self.guards, []
        for g in guards:
            _shut(g)

    def release(self) -> None:
        with self.lock:
            guards, self.guards = self.guards, []
        for g in guards:
            g.close()


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


@functools.cache
def _session_class():
    """requests.Session with an adapter whose connections register their sockets."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Guarded:
        def _new_conn(self):
            sock = super()._new_conn()
            ex = getattr(_local, "exchange", None)
            if ex is not None:
                ex.register(sock)
            return sock

    class Conn(Guarded, HTTPConnection):
        pass

    class SConn(Guarded, HTTPSConnection):
        pass

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class SPool(HTTPSConnectionPool):
        ConnectionCls = SConn

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *a, **kw):
            super().init_poolmanager(*a, **kw)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": SPool}

    def make(session=None):
        s = session or requests.Session()
        s.trust_env = False                  # no proxy / netrc from the environment for the site CA
        a = Adapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        s.mount("http://", a)
        s.mount("https://", a)
        return s

    return make


class Fetcher:
    """HTTP GET/POST bounded by a deadline (time.monotonic() instant) and a size cap."""

    def __init__(self, session=None):
        self._given = session
        self._session = None

    @property
    def session(self):
        if self._session is None:        # imported lazily: the warm path (all cached) never needs requests
            self._session = _session_class()(self._given)
        return self._session

    def fetch(self, url: str, deadline: float, cap: int, body: bytes | None = None,
              content_type: str | None = None) -> bytes:
        """The 200 body of GET `url` (POST `body` when given). RevocationError otherwise."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise RevocationError(f"{url}: no time left in the revocation budget")
        session = self.session
        ex = _Exchange()

        def work():
            _local.exchange = ex
            try:
                ex.result = _exchange(session, url, body, content_type, cap, deadline)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
                ex.error = e
            finally:
                _local.exchange = None
                ex.done.set()

        threading.Thread(target=work, name="sifguard-revocation-fetch", daemon=True).start()
        if not ex.done.wait(left):
            ex.cancel()
            raise RevocationError(f"{url}: no complete answer within the revocation budget")
        ex.release()
        if isinstance(ex.error, RevocationError):
            raise ex.error
        if ex.error is not None:
            e = ex.error
            raise RevocationError(f"{url}: {type(e).__name__}: {str(e)[-160:]}")
        return ex.result


def _exchange(session, url, body, content_type, cap, deadline) -> bytes:
    left = max(0.001, deadline - time.monotonic())
    headers = {"Accept-Encoding": "identity", "Connection": "close"}
    if content_type:
        headers["Content-Type"] = content_type
    r = session.request("POST" if body is not None else "GET", url, data=body, headers=headers,
                        timeout=(left, left), stream=True, allow_redirects=False)
    try:
        if r.status_code != 200:
            raise RevocationError(f"{url}: HTTP {r.status_code}")
        announced = (r.headers.get("Content-Length") or "").strip()
        if announced.isdigit() and int(announced) > cap:
            raise RevocationError(f"{url}: announces {announced} bytes, more than the {cap}-byte limit")
        buf = bytearray()
        while True:
            chunk = r.raw.read(min(_CHUNK, cap + 1 - len(buf)), decode_content=False)
            if not chunk:
                break
            buf += chunk
            if len(buf) > cap:
                raise RevocationError(f"{url}: answer is larger than the {cap}-byte limit")
            if time.monotonic() >= deadline:
                raise RevocationError(f"{url}: no complete answer within the revocation budget")
        return bytes(buf)
    finally:
        r.close()
