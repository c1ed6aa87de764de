"""The stager's wire format over a Unix stream socket: one request, one reply.

    request: 4-byte big-endian length + JSON object, with exactly one file descriptor
             (SCM_RIGHTS) attached to its first byte — the image, opened by the caller
    reply:   4-byte big-endian length + JSON object

Bounded: a request is at most MAX_REQUEST bytes, a reply at most MAX_REPLY.
"""

from __future__ import annotations

import json
import socket
import struct
import time

MAX_REQUEST = 64 << 10
MAX_REPLY = 1 << 20


class WireError(Exception):
    pass


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel gives it (SO_PEERCRED)."""
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))


def send(sock: socket.socket, doc: dict, fd: int | None = None) -> None:
    data = json.dumps(doc, separators=(",", ":")).encode()
    msg = struct.pack(">I", len(data)) + data
    if fd is None:
        sock.sendall(msg)
        return
    n = socket.send_fds(sock, [msg], [fd])
    if n < len(msg):
        sock.sendall(msg[n:])


def recv(sock: socket.socket, limit: int, want_fd: bool = False,
         deadline: float | None = None) -> tuple[dict, list[int]]:
    """One message; with `want_fd`, the descriptors that came with it (the caller closes
    them). Raises WireError on a malformed, oversized or truncated message, or one not
    complete by `deadline` (time.monotonic(); the socket's timeout bounds each read only,
    so a sender trickling a byte at a time would otherwise hold the reader for hours)."""
    fds: list[int] = []
    buf = b""

    def budget() -> None:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WireError("message not received in time")
            sock.settimeout(left)
    try:
        budget()
        if want_fd:
            data, fds, _flags, _ = socket.recv_fds(sock, 4096, 4)
        else:
            data = sock.recv(4096)
        buf += data
        while len(buf) < 4:
            budget()
            more = sock.recv(4096)
            if not more:
                raise WireError("connection closed before a message")
            buf += more
        (n,) = struct.unpack(">I", buf[:4])
        if n > limit:
            raise WireError(f"message of {n} bytes is over the {limit} byte limit")
        while len(buf) < 4 + n:
            budget()
            more = sock.recv(min(65536, 4 + n - len(buf)))
            if not more:
                raise WireError("connection closed in the middle of a message")
            buf += more
        doc = json.loads(buf[4:4 + n])
        if not isinstance(doc, dict):
            raise WireError("message is not a JSON object")
        return doc, fds
    except (ValueError, UnicodeDecodeError) as e:
        _close(fds)
        raise WireError(f"malformed message: {e}") from None
    except BaseException:
        _close(fds)
        raise


def _close(fds) -> None:
    import os
    for f in fds:
        try:
            os.close(f)
        except OSError:
            pass
