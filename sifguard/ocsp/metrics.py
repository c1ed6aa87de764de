"""`ca serve`'s own numbers: Prometheus `GET /metrics` and `GET /healthz`.

Why prometheus-client: the exposition format (escaping, histogram `_bucket`/`_sum`/
`_count` series, `le` labels, `+Inf`) and — above all — summing counters and histograms
across the pre-forked worker processes are its well-kept multiprocess mode; the format is
a spec we should not re-write by hand.

Aggregation across workers: the master creates a private directory (mkdtemp: 0700, owned
by the user running `ca serve`, root when root) and points PROMETHEUS_MULTIPROC_DIR at it
BEFORE prometheus_client is imported; each worker's counters and histograms live in
mmapped files there (one per pid), and a scrape — answered by whichever worker the
connection lands on — sums every file. A worker that dies and is replaced keeps its counts
(its files stay; `mark_process_dead` drops any live gauge of it); the directory is removed
when the server stops.

Numbers read from the CA database (the published CRL's number and age, the oldest
pre-signed OCSP answer, which parts are up) are computed at scrape time by the scraping
worker from its own SQLite connection: a few indexed reads, nothing per request.

Request metrics (kind: ocsp_post, ocsp_get, crl, tsa, cert, other; and metrics/healthz
for these two endpoints, so scraping never skews the OCSP numbers):
  sifguard_requests_total{kind, status}     OCSP: good|revoked|unknown|unauthorized|
                                            malformedRequest|internalError; tsa: granted|
                                            rejection (a 200) or the HTTP code; others: HTTP code
  sifguard_request_duration_seconds{kind}   the application's time for the request
  sifguard_ocsp_presigned_age_seconds       now - thisUpdate of each nonce-less (pre-signed,
                                            shared) answer served
  sifguard_tsa_tokens_total                 time-stamp tokens issued
Scrape-time gauges: sifguard_crl_number{issuer}, sifguard_crl_age_seconds{issuer},
sifguard_crl_next_update_seconds{issuer}, sifguard_ocsp_presigned_oldest_age_seconds,
sifguard_up{component=database|ocsp|tsa}.

/healthz: 200 `ok`; 200 `degraded: …` when OCSP and CRLs are served but the CA has a TSA
whose key could not be loaded (a balancer must not pull an OCSP responder out of rotation
for the TSA: every node's admission depends on OCSP, only signing depends on the TSA —
alert on sifguard_up{component="tsa"} == 0 instead); 503 `<reason>` when the CA database
cannot be read (the OCSP signer is loaded before the workers start, or `ca serve` does
not start at all).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import time

KINDS = ("ocsp_post", "ocsp_get", "crl", "tsa", "cert", "other", "metrics", "healthz")
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
AGE_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)
CRL_PATHS = frozenset({"/crl.der", "/crl", "/crl.pem", "/root-crl.der"})
CERT_PATHS = frozenset({"/root.crt", "/intermediate.crt", "/root.pem", "/intermediate.pem",
                        "/ocsp-responder.pem", "/tsa.pem"})
OCSP_NOT_GOOD = frozenset({"revoked", "unknown", "unauthorized", "malformedRequest", "internalError"})
OCSP_KEY = "sifguard.ocsp_answer"        # environ key where the responder leaves the OCSP Answer served
TSA_KEY = "sifguard.tsa_status"          # ... and the TSA its PKIStatus (granted | rejection)


def prepare() -> str:
    """The master's private multiprocess directory, set for prometheus_client (call before
    the first metric exists, i.e. before the workers fork)."""
    d = tempfile.mkdtemp(prefix="sifguard-metrics-")        # 0700, this user's
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = d
    if "prometheus_client.values" in sys.modules:           # imported early by someone: switch it
        from prometheus_client import values
        values.ValueClass = values.MultiProcessValue()
    return d


def worker_gone(directory: str, pid: int) -> None:
    from prometheus_client import multiprocess
    try:
        multiprocess.mark_process_dead(pid, directory)
    except OSError:
        pass


def cleanup(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def kind_of(method: str, path: str) -> str:
    """The request's kind, as the responder routes it (sifguard/ocsp/responder.py _route)."""
    if path in ("/metrics", "/healthz"):
        return path[1:]
    if path in CERT_PATHS:
        return "cert"
    if path in ("/tsa", "/tsa/"):
        return "tsa" if method == "POST" else "other"
    if method == "POST":
        return "ocsp_post"
    if method not in ("GET", "HEAD"):
        return "other"
    if path in CRL_PATHS:
        return "crl"
    if path.strip("/") in ("", "ocsp"):
        return "other"
    return "ocsp_get"


def tsa_status(der: bytes) -> str:
    """granted | rejection | … from a DER TimeStampResp (its first INTEGER: PKIStatus)."""
    names = ("granted", "granted", "rejection", "waiting", "revocationWarning", "revocationNotification")
    try:
        i = 0
        for _ in range(2):                                  # SEQUENCE TimeStampResp, SEQUENCE PKIStatusInfo
            if der[i] != 0x30:
                return "invalid"
            n = der[i + 1]
            i += 2 + (n & 0x7F if n & 0x80 else 0)
        if der[i] != 0x02 or der[i + 1] != 1:
            return "invalid"
        v = der[i + 2]
        return names[v] if v < len(names) else "invalid"
    except IndexError:
        return "invalid"


class _Metrics:
    def __init__(self):
        from prometheus_client import Counter, Histogram
        self.requests = Counter("sifguard_requests", "Requests answered, by kind and outcome",
                                ("kind", "status"), registry=None)
        self.latency = Histogram("sifguard_request_duration_seconds", "Time the application took for a request",
                                 ("kind",), buckets=LATENCY_BUCKETS, registry=None)
        self.age = Histogram("sifguard_ocsp_presigned_age_seconds",
                             "now - thisUpdate of nonce-less (pre-signed) OCSP answers served",
                             buckets=AGE_BUCKETS, registry=None)
        self.tokens = Counter("sifguard_tsa_tokens", "Time-stamp tokens issued", registry=None)
        self.latency_by_kind = {k: self.latency.labels(k) for k in KINDS}
        self.counters: dict = {}

    def count(self, kind: str, status: str) -> None:
        c = self.counters.get((kind, status))
        if c is None:
            c = self.counters[(kind, status)] = self.requests.labels(kind, status)
        c.inc()


class Metered:
    """WSGI middleware: /metrics and /healthz, and the request metrics of everything else."""

    def __init__(self, app, directory: str):
        self.app, self.directory = app, directory
        self.m = _Metrics()

    def __call__(self, environ, start_response):
        t0 = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        kind = kind_of(method, path)
        seen = []

        def start(status, headers, exc_info=None):
            seen.append(status)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        if kind == "metrics":
            body = self._handle_metrics(start, method)
        elif kind == "healthz":
            body = self._handle_health(start, method)
        else:
            body = self.app(environ, start)
        code = seen[0].split(" ", 1)[0] if seen else "000"
        status = code
        if kind in ("ocsp_post", "ocsp_get") and OCSP_KEY in environ:
            ans = environ[OCSP_KEY]
            status = ans.status if ans.status in OCSP_NOT_GOOD else "good"   # the CA db says valid, expired…
            if ans.cacheable and ans.this_update is not None:
                self.m.age.observe(max(0.0, time.time() - ans.this_update.timestamp()))
        elif kind == "tsa" and code == "200":
            status = environ.get(TSA_KEY) or (tsa_status(body[0]) if body else "invalid")
            if status == "granted":
                self.m.tokens.inc()
        self.m.count(kind, status)
        self.m.latency_by_kind[kind].observe(time.perf_counter() - t0)
        return body

    # --- the two endpoints -------------------------------------------------------
    def _handle_metrics(self, start, method):
        if method not in ("GET", "HEAD"):
            start("405 Method Not Allowed", [("Allow", "GET"), ("Content-Length", "0")])
            return [b""]
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg, path=self.directory)
        reg.register(_CaCollector(self.app))
        body = generate_latest(reg)
        start("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body))),
                         ("Cache-Control", "no-store")])
        return [body]                   # (the front sends no body for HEAD)

    def _handle_health(self, start, method):
        if method not in ("GET", "HEAD"):
            start("405 Method Not Allowed", [("Allow", "GET"), ("Content-Length", "0")])
            return [b""]
        ok, text = health(self.app)
        body = (text + "\n").encode()
        start("200 OK" if ok else "503 Service Unavailable",
              [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
        return [body]                   # (the front sends no body for HEAD)


def database_problem(store) -> str | None:
    """None when the CA database can be opened and read afresh (not only through the
    connection this worker already holds), else why not."""
    path = store.file("ca.db")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
        try:
            db.execute("SELECT serial FROM certificates LIMIT 1").fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        return f"CA database {path} unreadable: {e}"
    return None


def tsa_problem(app) -> str | None:
    tsa = getattr(app, "tsa", None)
    if tsa is None or tsa.unavailable is None or not tsa.unavailable[0].startswith("503"):
        return None        # working, or no TSA in this CA (nothing to degrade)
    return tsa.unavailable[1].strip().splitlines()[0]


def health(app) -> tuple[bool, str]:
    """(healthy enough to stay in rotation, one line)."""
    why = database_problem(app.store)
    if why:
        return False, why
    if getattr(app, "signer", None) is None:
        return False, "OCSP signer not loaded"
    t = tsa_problem(app)
    if t:
        return True, f"degraded: {t} (OCSP and CRLs ok)"
    return True, "ok"


class _CaCollector:
    """Scrape-time gauges from the CA database (this worker's connection)."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        now = time.time()
        up = GaugeMetricFamily("sifguard_up", "1 when this part of ca serve works", labels=("component",))
        db_ok = database_problem(self.app.store) is None
        up.add_metric(("database",), 1.0 if db_ok else 0.0)
        up.add_metric(("ocsp",), 1.0 if db_ok and getattr(self.app, "signer", None) is not None else 0.0)
        tsa = getattr(self.app, "tsa", None)
        if tsa is not None and (tsa.authority is not None or tsa_problem(self.app)):
            up.add_metric(("tsa",), 0.0 if tsa_problem(self.app) else 1.0)
        yield up
        number = GaugeMetricFamily("sifguard_crl_number", "cRLNumber of the newest CRL", labels=("issuer",))
        age = GaugeMetricFamily("sifguard_crl_age_seconds", "now - thisUpdate of the newest CRL", labels=("issuer",))
        left = GaugeMetricFamily("sifguard_crl_next_update_seconds", "nextUpdate - now of the newest CRL "
                                 "(negative: expired)", labels=("issuer",))
        oldest = GaugeMetricFamily("sifguard_ocsp_presigned_oldest_age_seconds",
                                   "now - thisUpdate of the oldest stored pre-signed OCSP answer")
        try:
            store = self.app.store
            store.reconnect_after_fork()
            with self.app.lock:
                for issuer in ("intermediate", "root"):
                    r = store.db.execute("SELECT number, this_update, next_update FROM crls WHERE issuer=? "
                                         "ORDER BY number DESC LIMIT 1", (issuer,)).fetchone()
                    if r:
                        number.add_metric((issuer,), float(r[0]))
                        age.add_metric((issuer,), now - r[1])
                        left.add_metric((issuer,), r[2] - now)
                r = store.db.execute("SELECT min(this_update) FROM ocsp_cache").fetchone()
            if r and r[0] is not None:
                oldest.add_metric((), now - r[0])
        except sqlite3.Error:
            pass        # sifguard_up{component="database"} says so
        yield number
        yield age
        yield left
        yield oldest
