#!/usr/bin/env python3
"""Request-head parsing cost: the responder front's hand-written parser
(sifguard.ocsp.http1.parse_head) against h11 (the peer: the well-kept sans-I/O HTTP/1.1
library httpx and uvicorn use) on the same heads — what an h11-based front would pay
per request before its own strictness checks. Context: `sifguard ca serve` spends
~55-60 µs of server CPU per keep-alive request in total (tests/bench/ocsp_throughput.py).

Needs h11 (`pip install h11`); it is not a dependency of sifguard.
Usage: tests/bench/http1_parse.py [--rounds 7]
"""
import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sifguard.ocsp import http1  # noqa: E402

HEADS = {
    "ab -k POST (HTTP/1.0)": b"POST / HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-length: 83\r\n"
                             b"Content-type: application/ocsp-request\r\nHost: 127.0.0.1:8080\r\n"
                             b"User-Agent: ApacheBench/2.3\r\nAccept: */*",
    "requests POST (HTTP/1.1)": b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: python-requests/2.31.0\r\n"
                                b"Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n"
                                b"Content-Type: application/ocsp-request\r\nContent-Length: 83",
    "GET base64 (HTTP/1.1)": b"GET /MFMwUTBPME0wSzAJBgUrDgMCGgUABBSVlc%2BdkhPcq7QzrXa1pB0tMDTpKAQU HTTP/1.1\r\n"
                             b"Host: ocsp.example.org\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip",
}


def per_call_us(fn, number, rounds):
    times = sorted(timeit.timeit(fn, number=number) / number * 1e6 for _ in range(rounds))
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7, help="timing rounds per parser and head (median reported)")
    ap.add_argument("--number", type=int, default=20000, help="parses per round")
    a = ap.parse_args()
    try:
        import h11
    except ImportError:
        sys.exit("needs h11 (pip install h11)")

    def h11_parse(head):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head + http1.HEAD_END)
        event = conn.next_event()
        assert isinstance(event, h11.Request), event
        return event

    print(f"median of {a.rounds} rounds x {a.number} parses, one core; h11 {h11.__version__}")
    print(f"{'head':<26} {'sifguard µs':>12} {'h11 µs':>8} {'h11/sifguard':>13}")
    for name, head in HEADS.items():
        http1.parse_head(head)
        h11_parse(head)
        ours = per_call_us(lambda: http1.parse_head(head), a.number, a.rounds)
        peer = per_call_us(lambda: h11_parse(head), a.number, a.rounds)
        print(f"{name:<26} {ours:12.1f} {peer:8.1f} {peer / ours:13.2f}")


if __name__ == "__main__":
    main()
