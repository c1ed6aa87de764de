"""The responder front's request-head parser (sifguard.ocsp.http1): strict framing,
and for any bytes either a parsed head or BadRequest — nothing else."""
import pytest
from hypothesis import given, settings, strategies as st

from sifguard.ocsp import http1


def test_typical_heads():
    h = http1.parse_head(b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 12\r\nConnection: Keep-Alive")
    assert (h.method, h.version, h.content_length, h.keep_alive) == ("POST", "HTTP/1.0", 12, True)
    h = http1.parse_head(b"GET /MEUw%2B HTTP/1.1\r\nHost: a\r\nConnection: close")
    assert (h.target, h.keep_alive, h.content_length) == ("/MEUw%2B", False, 0)
    assert http1.parse_head(b"GET / HTTP/1.1").keep_alive            # 1.1 persists by default
    assert not http1.parse_head(b"GET / HTTP/1.0").keep_alive        # 1.0 does not
    h = http1.parse_head(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3, 3")
    assert h.expect_continue and h.content_length == 3               # repeated equal lengths are one length


@pytest.mark.parametrize("head,code", [
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", 411),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1, 2", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: +1", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: ", 400),
    (b"GET / HTTP/1.1\r\n folded: x", 400),
    (b"GET / HTTP/1.1\r\nX : y", 400),
    (b"GET / HTTP/1.1\r\nX: a\rb", 400),
    (b"GET / HTTP/1.1\r\nX: a\nb", 400),
    (b"GET / HTTP/1.1\r\nX: a\x00", 400),
    (b"GET  / HTTP/1.1", 400),
    (b"GET /a b HTTP/1.1", 400),
    (b"G(T / HTTP/1.1", 400),
    (b"GET / HTTP/1.2", 505),
    (b"GET / http/1.1", 400),
    (b"GET / HTTP/1.1" + b"\r\nX: y" * (http1.MAX_HEADERS + 1), 431),
    # where a general-purpose parser (h11) is lenient by design, the front stays strict:
    (b"GET / HTTP/1.1\nHost: a", 400),                                 # bare LF line end (h11 accepts)
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b", 400),                   # obs-fold (h11 unfolds it)
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip", 411),     # any transfer coding
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", 411),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 411),
    (b"POST / HTTP/1.1\r\ntransfer-encoding : chunked", 400),            # space before the colon
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 03", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1_0", 400),                  # int() would take it
])
def test_refused_heads(head, code):
    with pytest.raises(http1.BadRequest) as e:
        http1.parse_head(head)
    assert e.value.status == code


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300) | st.lists(st.sampled_from(
    [b"GET", b"POST", b" ", b"/", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b":", b"Content-Length", b"Transfer-Encoding",
     b"Connection", b"close", b"keep-alive", b"1", b"-", b",", b"\t", b"\n", b"\r", b"\x00", b"\xff"]),
    max_size=40).map(b"".join))
def test_any_bytes_parse_or_bad_request(head):
    try:
        h = http1.parse_head(head)
    except http1.BadRequest as e:
        assert e.status in http1.REASONS
        return
    assert h.content_length >= 0 and h.version in ("HTTP/1.0", "HTTP/1.1") and " " not in h.target


def test_response_heads_drop_hop_by_hop_and_frame():
    out = http1.response_head("200 OK", [("Connection", "keep-alive"), ("Content-Length", "99"),
                                         ("Transfer-Encoding", "chunked"), ("X-A", "1")], 5, keep_alive=False)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n")
    assert b"Content-Length: 5\r\n" in out and b"99" not in out and b"chunked" not in out
    assert b"Connection: close\r\n" in out and b"X-A: 1\r\n" in out
    assert b"Connection: keep-alive" in http1.response_head("200 OK", [], 0, True, "HTTP/1.0")
    assert b"Connection" not in http1.response_head("200 OK", [], 0, True, "HTTP/1.1")
