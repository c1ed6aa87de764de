"""HTTP/1.0 and 1.1 message heads for the responder's front (sifguard.ocsp.front).

Pure: bytes in, a parsed request head (or BadRequest) out; status, headers and a body
length in, response head bytes out. Deliberately strict and small — an OCSP responder
is asked GET/POST/HEAD with a Content-Length body of at most 64 KiB, so everything that
could frame a message two ways (Transfer-Encoding, conflicting Content-Lengths, folded
or malformed header lines, bare CR/LF) is refused instead of interpreted.

Why not h11 (measured, tests/bench/http1_parse.py): h11 parses a head in ~16 µs against
~6 µs here, and a front built on it measured ~30 µs more server CPU per keep-alive request
(~83 against ~53 µs) — far over the project's ~15% bound. h11 would not remove the
strictness checks either: it accepts bare-LF line ends, unfolds obs-fold, and its state
machine never keeps an HTTP/1.0 connection alive (`ab -k`, `Connection: Keep-Alive`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate

MAX_HEAD = 16384          # request line + headers
MAX_HEADERS = 64
HEAD_END = b"\r\n\r\n"

_TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TARGET_CHARS = bytes(range(0x21, 0x7f))
_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")    # controls other than HT, CR, LF


def _is_token(b: bytes) -> bool:
    return bool(b) and not b.translate(None, _TOKEN_CHARS)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                        "trailer", "upgrade", "content-length"})   # the front frames the message itself

REASONS = {100: "Continue", 200: "OK", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}


class BadRequest(Exception):
    """The head cannot be answered as a request: answer `status` and close."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str                                  # the raw request-target (latin-1)
    version: str                                 # "HTTP/1.0" | "HTTP/1.1"
    headers: tuple[tuple[str, str], ...]         # (lower-case name, value) in order
    content_length: int
    keep_alive: bool                             # what the client asked for
    expect_continue: bool


def parse_head(head: bytes) -> RequestHead:
    """Parse a request head (without the final blank line)."""
    lines = head.split(b"\r\n")
    if _CTL.search(head) or head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        raise BadRequest(400, "control character or bare CR/LF in the request head")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _is_token(parts[0]):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest(505 if version.startswith(b"HTTP/") else 400, "unsupported HTTP version")
    if not target or target.translate(None, _TARGET_CHARS):
        raise BadRequest(400, "malformed request target")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, "too many header fields")
    headers = []
    lengths = set()
    connection = ""
    expect = ""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _is_token(name):         # also refuses obs-fold (leading whitespace)
            raise BadRequest(400, "malformed header field")
        value = value.strip(b" \t")
        n, v = name.decode("ascii").lower(), value.decode("latin-1")
        if n == "transfer-encoding":
            raise BadRequest(411, "only Content-Length bodies are accepted")
        if n == "content-length":
            lengths.update(x.strip() for x in v.split(","))
        elif n == "connection":
            connection += "," + v.lower()
        elif n == "expect":
            expect = v.lower()
        headers.append((n, v))
    length = 0
    if lengths:
        if len(lengths) != 1 or not all(c in "0123456789" for c in next(iter(lengths))) or not next(iter(lengths)):
            raise BadRequest(400, "malformed Content-Length")
        length = int(next(iter(lengths)))
    tokens = {t.strip() for t in connection.split(",")}
    keep_alive = "keep-alive" in tokens if version == b"HTTP/1.0" else "close" not in tokens
    return RequestHead(method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"), tuple(headers),
                       length, keep_alive, expect == "100-continue" and version == b"HTTP/1.1")


_date = (0, "")


def http_date() -> str:
    """The Date header value, formatted once per second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def response_head(status: str, headers: list[tuple[str, str]], body_length: int, keep_alive: bool,
                  version: str = "HTTP/1.1", send_length: bool = True) -> bytes:
    """`status` as WSGI gives it ("200 OK"); hop-by-hop headers from the application are
    dropped — the front alone decides framing and persistence."""
    out = [f"HTTP/1.1 {status}\r\nDate: {http_date()}\r\n"]
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            out.append(f"{name}: {value}\r\n")
    if send_length:
        out.append(f"Content-Length: {body_length}\r\n")
    if not keep_alive:
        out.append("Connection: close\r\n")
    elif version == "HTTP/1.0":
        out.append("Connection: keep-alive\r\n")
    out.append("\r\n")
    return "".join(out).encode("latin-1")


def error_response(code: int, keep_alive: bool = False) -> bytes:
    body = f"{code} {REASONS.get(code, 'Error')}\n".encode()
    return response_head(f"{code} {REASONS.get(code, 'Error')}", [("Content-Type", "text/plain")], len(body),
                         keep_alive) + body
