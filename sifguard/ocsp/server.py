"""Run the responder WSGI app: a pre-forked pool of worker processes sharing one
listening socket, each running the asyncio HTTP front of sifguard.ocsp.front.

Why this front (issue 8, class 7 — two clients sending a header byte every 3 s took
`ca serve` down). uWSGI's `--http-socket` gives each request a whole worker and its
`--socket-timeout` is per read, so N trickling clients hold N workers forever. What was
measured or read before choosing (2 cores shared with the clients, 127.0.0.1):

- uWSGI's async HTTP router (`--http`; the pyuwsgi wheel has the http/corerouter
  plugins): `--http-headers-timeout`/`--http-timeout`/`--http-connect-timeout` are
  re-armed on every event (corerouter.c resets the peer's timer on each read), so they
  are per read too, and there is no per-peer or total connection bound. Heads are
  parsed in the router, so 50 header tricklers did not hurt, but the router streams a
  body to a worker as it arrives: 4 clients trickling a 60000-byte body at 1 byte/s made
  every OCSP request of a 2-worker uWSGI time out for the whole attack. The extra hop
  (router process, then the worker's socket) answered 3.1–4.5k req/s under `ab -k`
  with `--http-keepalive` (a run on a loaded machine: an indication, not a ratio).
- uWSGI `--async`/`--gevent`: more slots per worker, the same per-read timeouts — an
  attacker opens more slots than there are.
- gunicorn (sync/gthread): per-read timeouts, ~6k req/s here when uWSGI was chosen;
  uvicorn (and so hypercorn-style ASGI fronts with an ASGI→WSGI adapter): its only
  timeout is keep-alive between requests, reset on every byte — nothing bounds the
  receipt of a request; granian (Rust/hyper) has a total header-read timeout
  (`--http1-header-read-timeout`) but no body deadline among its options, and is a large
  new dependency.

So the front is small and our own (stdlib asyncio, no new dependency): it reads a
request COMPLETELY under total deadlines (head 5 s, body 5 s, unread answer 5 s) and
only then calls the application, in the same process, synchronously — the application
answers in well under a millisecond (one indexed SQLite read, a pre-signed answer), so
nothing is gained by handing it to another process. Slow, idle and non-reading clients
cost a few KB each and are checked by one sweep every 0.25 s. Connections are bounded
per worker (2048 in total, 64 per peer address); at a bound a new connection replaces
the one that has waited longest for its request to complete (never one younger than
0.5 s: then the newcomer is closed). Pipelined requests take turns with other
connections, and a client that never reads pins at most a small send buffer. HTTP/1.1 keep-alive is
supported (until the client closes, 1000 answers, or 5 s idle); a connection's last
answer says `Connection: close` and, when the client may still be sending, is followed
by a half-close and a short drain, so clients never race a silent close. The cost is
per connection, not per request: with keep-alive (`ab -k`) it answers as fast as or
faster than the uWSGI set-up did (server CPU ~56 µs a request against uWSGI's ~59); a
client that opens a new connection for every request costs ~135 µs against uWSGI's ~60
(Python accepts and closes each one), so gets about half of uWSGI's rate.
tests/bench/ocsp_throughput.py and tests/bench/ocsp_slow_clients.py measure both against
`openssl ocsp` (numbers in the README, "The site CA").

The master process binds the socket and loads the keys before forking (a CA passphrase
never travels through the environment), restarts workers that die, and stops them on
SIGTERM/SIGINT. A worker stuck in the application for `app_timeout` seconds is killed
by its own SIGALRM and replaced (what uWSGI's `harakiri` did). Each worker opens its own
SQLite connection. The application stays a plain WSGI callable: any WSGI server can host
`sifguard.ocsp.responder:from_env()`.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import socket
import sys
import time

from sifguard.errors import BadInputError, SifguardError
from sifguard.ocsp.front import Front, Limits

__all__ = ["Limits", "serve", "default_workers", "bind"]


def default_workers() -> int:
    return max(2, os.cpu_count() or 1)


def bind(listen: str) -> socket.socket:
    """A listening TCP socket for HOST:PORT ([v6]:PORT too); BadInputError when impossible."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInputError(f"--listen wants HOST:PORT (port 1-65535), not {listen!r}")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        return socket.create_server(addr, family=family, backlog=1024)
    except (OSError, OverflowError) as e:
        why = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).split(" (while")[0]
        raise BadInputError(f"cannot listen on {listen}: {why}") from None


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    want = min(want, 65536)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError):
            pass
    return soft


def serve(app, listen: str, workers: int, access_log: bool = False, limits: Limits | None = None,
          metrics: bool = True) -> None:
    """Serve until SIGTERM/SIGINT. Blocks; returns after the workers have stopped. With
    `metrics`, /metrics and /healthz are answered too (sifguard/ocsp/metrics.py), summed
    over the workers through a private directory removed on the way out."""
    sock = bind(listen)
    fds = _raise_fd_limit()
    limits = limits or Limits()
    if limits.max_connections > fds - 64:        # leave room for the database, logs, the listener
        from dataclasses import replace
        limits = replace(limits, max_connections=max(16, fds - 64))
    host, port = sock.getsockname()[:2]
    sys.stdout.flush()
    sys.stderr.flush()
    mdir, gone = None, None
    if metrics:
        import importlib.util
        if importlib.util.find_spec("prometheus_client") is None:   # OCSP matters more than its numbers
            print("sifguard ca serve: /metrics and /healthz disabled: the prometheus-client package is not "
                  "installed", file=sys.stderr, flush=True)
            metrics = False
    if metrics:
        from sifguard.ocsp import metrics as met
        try:
            mdir = met.prepare()
        except OSError as e:
            print(f"sifguard ca serve: /metrics and /healthz disabled: no private directory for them "
                  f"({e.strerror or e})", file=sys.stderr, flush=True)
        else:
            app = met.Metered(app, mdir)
            gone = lambda pid: met.worker_gone(mdir, pid)   # noqa: E731
    try:
        _supervise(lambda: _worker(sock, app, limits, host, port, access_log), workers, gone)
    finally:
        sock.close()
        if mdir:
            met.cleanup(mdir)


class _Stop(Exception):
    pass


def _supervise(run_worker, n: int, on_exit=None) -> None:
    stopping = False

    def stop(_sig, _frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise _Stop   # out of waitpid (which Python otherwise retries after a handler)

    children: dict[int, float] = {}
    failed = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGCHLD, lambda *_: None)     # wake sleep() when a worker exits
    recent_deaths: list[float] = []
    try:
        while not stopping:
            while len(children) < n and not stopping:
                try:
                    pid = os.fork()
                except OSError as e:
                    raise SifguardError(f"ca serve: cannot start a worker: {e.strerror or e}") from None
                if pid == 0:
                    code = 1
                    try:
                        run_worker()
                        code = 0
                    except BaseException as e:  # noqa: BLE001 - one line for the log, then a new worker
                        print(f"sifguard ca serve: worker failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                    finally:
                        os._exit(code)
                children[pid] = time.monotonic()
            try:
                pid, status = os.waitpid(-1, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                continue
            started = children.pop(pid, None)
            if started is None or stopping:
                continue
            if on_exit is not None:
                on_exit(pid)
            why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
                why = "stuck in a request (app_timeout)"
            print(f"sifguard ca serve: worker {pid} ended ({why}); starting another", file=sys.stderr, flush=True)
            now = time.monotonic()
            recent_deaths = [t for t in recent_deaths if now - t < 10] + [now]
            if len(recent_deaths) > 5 * n:
                failed = True
                break
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                children.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    if failed:
        raise SifguardError("ca serve: workers keep dying (see the messages above); stopped")


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)    # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(sock: socket.socket, app, limits: Limits, host: str, port: int, access_log: bool) -> None:
    _die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    if os.getppid() == 1:
        return
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    front = Front(app, limits, str(host), port, access_log)
    front.start(loop)
    server = loop.run_until_complete(loop.create_server(front.protocol, sock=sock, backlog=1024))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        for conn in list(front.conns):
            conn.abort()
