"""Hostile HTTP clients for the responder's load tests and bench (127.0.0.1 only):
each kind holds connections the way an attacker would, reconnecting whenever the
server drops it, until stopped. Shared by tests/test_responder_slow_clients.py and
tests/bench/ocsp_slow_clients.py.

kinds:
  header  - trickles a request head, one byte every `interval` seconds
  body    - a complete head announcing Content-Length: 60000, then the body one byte every `interval`
  idle    - connects and sends nothing
  noread  - pipelines requests for a large answer and never reads
"""
import socket
import statistics
import threading
import time

HEAD = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\nContent-Length: 60000\r\n\r\n"


class SlowClients:
    def __init__(self, port: int, kind: str, count: int, interval: float = 1.0, sources: int = 1):
        """`sources` > 1 spreads the clients over that many loopback addresses
        (127.0.0.2, 127.0.0.3, ...), as many attacking hosts would be."""
        assert kind in ("header", "body", "idle", "noread")
        self.port, self.kind, self.count, self.interval = port, kind, count, interval
        self.sources = [f"127.0.0.{2 + i}" for i in range(sources)] if sources > 1 else [None]
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.connects = 0          # connections opened (a reconnect means the server dropped one)
        self.bytes_sent = 0
        self.max_bytes_on_one = 0  # the most any single connection got in before being dropped

    def __enter__(self):
        for i in range(self.count):
            t = threading.Thread(target=self._run, args=(self.sources[i % len(self.sources)],), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads:
            t.join(10)

    def _connect(self, source):
        s = socket.socket()
        if source:
            s.bind((source, 0))
        if self.kind == "noread":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(2)
        s.connect(("127.0.0.1", self.port))
        with self.lock:
            self.connects += 1
        return s

    def _run(self, source):
        while not self.stop_event.is_set():
            try:
                s = self._connect(source)
            except OSError:
                self.stop_event.wait(0.1)
                continue
            sent = 0
            try:
                if self.kind == "body":
                    s.sendall(HEAD)
                    sent = len(HEAD)
                if self.kind == "noread":
                    req = b"GET /root.pem HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    s.settimeout(0.5)
                    try:
                        for _ in range(20000):
                            s.sendall(req)
                            sent += len(req)
                    except socket.timeout:
                        pass          # the server stopped reading: exactly the point
                    s.settimeout(2)
                payload = HEAD if self.kind == "header" else b"0" * 60000
                i = 0
                while not self.stop_event.wait(self.interval):
                    if self.kind in ("header", "body"):
                        s.sendall(payload[i:i + 1])
                        i, sent = i + 1, sent + 1
                    elif _peer_closed(s, self.kind):
                        break
            except OSError:
                pass
            finally:
                s.close()
                with self.lock:
                    self.bytes_sent += sent
                    self.max_bytes_on_one = max(self.max_bytes_on_one, sent)


def _peer_closed(s: socket.socket, kind: str) -> bool:
    """Has the server closed this connection? (never reads an answer for 'noread')"""
    if kind == "noread":
        try:
            s.send(b"")
            return False
        except OSError:
            return True
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        s.setblocking(True)
        s.settimeout(2)


def legit_requests(url: str, body: bytes, duration: float, max_count: int = 100000, timeout: float = 10.0):
    """Sequential OCSP POSTs, each on a new connection, for `duration` seconds:
    (latencies in seconds, errors as strings)."""
    import requests
    lat, errors = [], []
    end = time.monotonic() + duration
    while time.monotonic() < end and len(lat) + len(errors) < max_count:
        t = time.perf_counter()
        try:
            r = requests.post(url, data=body, headers={"Content-Type": "application/ocsp-request",
                                                       "Connection": "close"}, timeout=timeout)
            from cryptography.x509 import ocsp
            ok = r.status_code == 200 and ocsp.load_der_ocsp_response(r.content).response_status.name == "SUCCESSFUL"
            (lat if ok else errors).append(time.perf_counter() - t if ok else f"HTTP {r.status_code}")
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            errors.append(f"{type(e).__name__}: {e}")
    return lat, errors


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(lat) -> str:
    return (f"n={len(lat)} p50={percentile(lat, 50) * 1000:.1f} ms p99={percentile(lat, 99) * 1000:.1f} ms "
            f"max={max(lat) * 1000 if lat else float('nan'):.1f} ms mean={statistics.mean(lat) * 1000 if lat else 0:.1f} ms")
