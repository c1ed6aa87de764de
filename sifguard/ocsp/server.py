"""Run the responder WSGI app on gunicorn.

Why gunicorn: a mature, pure-Python, pre-fork WSGI server — the worker processes use
every core (the GIL confines a threaded server to one), a crashed or stuck worker is
replaced by the arbiter, and `gthread` workers keep HTTP/1.1 connections alive for
OCSP clients and load balancers. The app stays a plain WSGI callable, so any other
server (uWSGI, mod_wsgi, waitress) can host `sifguard.ocsp.responder:from_env()`.
"""

from __future__ import annotations

import os

from sifguard.errors import BadInputError


def serve(app_factory, listen: str, workers: int, threads: int = 4, access_log: bool = False) -> None:
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:  # pragma: no cover - gunicorn is an install requirement
        raise BadInputError("gunicorn is not installed (pip install gunicorn)") from None

    class _App(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", [listen])
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("keepalive", 5)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 5)
            self.cfg.set("limit_request_line", 8190)
            self.cfg.set("limit_request_field_size", 8190)
            self.cfg.set("loglevel", "warning")
            self.cfg.set("accesslog", "-" if access_log else None)
            self.cfg.set("proc_name", "sifguard-ca-serve")
            self.cfg.set("preload_app", False)    # each worker opens its own SQLite connection

        def load(self):
            return app_factory()

    _App().run()


def default_workers() -> int:
    return max(2, (os.cpu_count() or 1) * 2)
