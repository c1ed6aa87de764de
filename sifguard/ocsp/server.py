"""Run the responder WSGI app on uWSGI (the `pyuwsgi` wheel).

Why uWSGI: a production pre-fork WSGI server written in C, in use for over a decade;
its native HTTP parser and master/worker model (stuck workers reaped by `harakiri`,
dead ones respawned) serve ~3x the requests of gunicorn on this 2-core machine —
measured 20k vs 6k requests/s for a trivial app — which is what lets the dynamic
responder keep up with OpenSSL's C responder (tests/bench/ocsp_throughput.py). The
`pyuwsgi` wheel needs no compiler. The app stays a plain WSGI callable, so any other
server can host `sifguard.ocsp.responder:from_env()` instead.

Keys are loaded once in this (master) process, before the fork, so a CA passphrase
never travels through the environment; each worker opens its own SQLite connection.
"""

from __future__ import annotations

import os
import sys

from sifguard.errors import BadInputError


def serve(app, listen: str, workers: int, access_log: bool = False) -> None:
    try:
        import pyuwsgi
    except ImportError:  # pragma: no cover - pyuwsgi is an install requirement
        raise BadInputError("uWSGI is not installed (pip install pyuwsgi)") from None
    from sifguard.ocsp import responder
    responder.application = app
    args = [
        "--http-socket", listen,
        "--module", "sifguard.ocsp.responder:application",
        "--master", "--processes", str(workers), "--need-app", "--die-on-term",
        "--socket-timeout", "5",          # a client stalling mid-request is dropped
        "--harakiri", "20",               # a worker stuck on one request is replaced
        "--buffer-size", "16384", "--listen", "128",
        "--ignore-sigpipe", "--ignore-write-errors", "--disable-write-exception",
        "--procname-prefix-spaced", "sifguard-ca-serve",
        "--hook-master-start", "unix_signal:15 gracefully_kill_them_all",
    ]
    if not access_log:
        args.append("--disable-logging")
    sys.stdout.flush()
    pyuwsgi.run(args)


def default_workers() -> int:
    return max(2, os.cpu_count() or 1)
