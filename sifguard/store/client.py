"""Asking the stager (the hooks' side, unprivileged): send the open image, get a reply."""

from __future__ import annotations

import os
import random
import socket
import time

from sifguard.errors import SifguardError
from sifguard.store import wire


BUSY_PAUSE = 0.05          # first pause before asking a busy stager again (seconds)
BUSY_PAUSE_MAX = 1.0


class StagerUnavailable(SifguardError):
    """No stager answered (not running, socket missing, timed out): the hooks fall back."""

    exit_code = 1


class StagerRefused(SifguardError):
    """The stager answered with an error (the image cannot be staged)."""

    exit_code = 1


def ask(socket_path: str, fd: int, request: dict, timeout: float = 600.0, connect_timeout: float = 2.0) -> dict:
    """Send `request` with the image descriptor `fd`; the stager's reply. Staging a large
    image takes as long as reading it once, so `timeout` bounds the whole exchange."""
    reply, held = ask_held(socket_path, fd, request, timeout, connect_timeout)
    if held is not None:
        os.close(held)
    return reply


def ask_held(socket_path: str, fd: int, request: dict, timeout: float = 600.0,
             connect_timeout: float = 2.0) -> tuple[dict, int | None]:
    """`ask`, and the descriptor the stager sent with an allowing reply: the stored copy,
    open read-only and already marked in use by the stager before it answered (so no
    collection can come between the answer and the run). The caller closes it.
    A stager at its connection limits (a job step starting more tasks on the node than it
    takes connections from one user) is asked again, after a growing pause, until `timeout`."""
    deadline = time.monotonic() + timeout
    pause = BUSY_PAUSE
    while True:
        reply, held = _exchange(socket_path, fd, request, deadline, timeout, connect_timeout)
        if not reply.get("busy"):
            break
        if held is not None:
            os.close(held)
        if time.monotonic() + pause >= deadline:
            raise StagerUnavailable(f"the image store's stager at {socket_path} stayed busy for {timeout:.0f} s")
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, BUSY_PAUSE_MAX)
    if not reply.get("ok"):
        if held is not None:
            os.close(held)
        raise StagerRefused(str(reply.get("error") or "the stager refused the request")[:1000])
    return reply, held


def _exchange(socket_path: str, fd: int, request: dict, deadline: float, timeout: float,
              connect_timeout: float) -> tuple[dict, int | None]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(connect_timeout)
        try:
            s.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError, socket.timeout, OSError) as e:
            raise StagerUnavailable(f"the image store's stager at {socket_path} is not answering "
                                    f"({getattr(e, 'strerror', None) or e})") from None
        try:
            uid = wire.peer_credentials(s)[1]
        except OSError:
            uid = -1
        if uid != 0:       # whoever bound that path (a stopped stager's socket in a directory users can write)
            raise StagerUnavailable(f"the process answering at {socket_path} is not root (uid {uid}): "
                                    "not the image store's stager")
        try:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                wire.send(s, request, fd)
            except (BrokenPipeError, ConnectionResetError):
                pass        # a stager at its limits answers and closes before reading: its answer is there
            reply, fds = wire.recv(s, wire.MAX_REPLY, want_fd=True, deadline=deadline)
            held = fds[0] if fds else None
            for extra in fds[1:]:
                os.close(extra)
        except (socket.timeout, TimeoutError):
            raise StagerUnavailable(f"the image store's stager at {socket_path} did not answer within "
                                    f"{timeout:.0f} s") from None
        except (OSError, wire.WireError) as e:
            raise StagerUnavailable(f"the image store's stager at {socket_path} failed: {e}") from None
    finally:
        s.close()
    return reply, held
