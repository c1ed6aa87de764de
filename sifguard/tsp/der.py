"""Raw DER elements, for the bytes a signature covers.

A signature covers bytes as they were sent; asn1crypto re-encodes a parsed tree when asked
for its bytes (slowly, and not always as sent). So the two byte strings a token's signature
depends on — the signed attributes and the TSTInfo — and a reply's token are cut out of the
input by walking the DER here, and asn1crypto only reads their meaning."""

from __future__ import annotations

from dataclasses import dataclass


class DerError(ValueError):
    """Not well-formed DER (lengths past the end, indefinite lengths, …)."""


@dataclass(frozen=True)
class Element:
    tag: int              # the identifier octet (single-byte tags only)
    raw: bytes            # header and contents
    contents: bytes


def _one(buf: bytes, i: int) -> tuple[Element, int]:
    if i + 2 > len(buf):
        raise DerError("truncated")
    tag = buf[i]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used here")
    n, j = buf[i + 1], i + 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= 4 or j + k > len(buf):
            raise DerError("bad length")
        n, j = int.from_bytes(buf[j:j + k], "big"), j + k
    if j + n > len(buf):
        raise DerError("truncated")
    return Element(tag, buf[i:j + n], buf[j:j + n]), j + n


def element(buf: bytes) -> Element:
    """The one element `buf` holds (trailing bytes are an error)."""
    e, end = _one(buf, 0)
    if end != len(buf):
        raise DerError("trailing bytes")
    return e


def children(e: Element) -> list[Element]:
    """The elements inside a constructed element, in order."""
    out, i = [], 0
    while i < len(e.contents):
        c, i = _one(e.contents, i)
        out.append(c)
    return out


# --- the little encoding a time-stamp request needs -------------------------------------
def encode(tag: int, contents: bytes) -> bytes:
    n = len(contents)
    if n < 0x80:
        return bytes([tag, n]) + contents
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + contents


def integer(v: int) -> bytes:
    size = max(1, (v.bit_length() + 8) // 8)       # room for the sign bit
    return encode(0x02, v.to_bytes(size, "big", signed=True))


def oid(dotted: str) -> bytes:
    """DER OBJECT IDENTIFIER; ValueError for anything but a valid dotted OID."""
    parts = dotted.split(".")
    if len(parts) < 2 or not all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts):
        raise ValueError(f"{dotted!r} is not a dotted object identifier")
    arcs = [int(p) for p in parts]
    if arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError(f"{dotted!r} is not a valid object identifier (first arcs)")
    out = bytearray()
    for a in [arcs[0] * 40 + arcs[1]] + arcs[2:]:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7F))
            a >>= 7
        out += bytes(reversed(chunk))
    return encode(0x06, bytes(out))


def oid_text(contents: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's contents."""
    arcs, v = [], 0
    for b in contents:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(v)
            v = 0
    if not arcs:
        raise DerError("empty object identifier")
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first] + arcs[1:]))
