"""`sifguard store serve`: the privileged stager (root, foreground) on a Unix socket.

Callers send the image as an open descriptor, so the stager reads only what the caller
could open (no confused deputy), identified by SO_PEERCRED. Bounded everywhere: total
connections, connections per uid, request size and time to send it, and how many
stagings copy at once; concurrent requests for the same image wait on one staging.
Works under systemd socket activation (LISTEN_FDS) or binds the socket itself.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass

from sifguard.errors import BadInputError
from sifguard.store import wire
from sifguard.store.layout import Store
from sifguard.store.service import HELD, Peer, Service, error_reply


@dataclass(frozen=True)
class Limits:
    connections: int = 128          # open connections in total
    per_uid: int = 32               # open connections per peer uid
    staging: int = 2                # stagings copying at once (each reads one image)
    request_seconds: float = 5.0    # to send the request once connected


def _peer(conn: socket.socket) -> Peer:
    return Peer(*wire.peer_credentials(conn))


def _log(msg: str) -> None:
    try:
        print(f"sifguard-stager: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class Server:
    def __init__(self, store: Store, socket_path: str | None, limits: Limits = Limits(), durable: bool = True,
                 max_size: int | None = None, per_user_bytes: int | None = None):
        self.store = store
        self.socket_path = socket_path
        self.limits = limits
        self.service = Service(store, durable=durable, max_size=max_size, per_user_bytes=per_user_bytes)
        self.service.stager.slots = threading.BoundedSemaphore(limits.staging)
        self.service.stager.per_uid = max(1, limits.staging - 1)   # one user never takes every copy slot
        self._count = 0
        self._per_uid: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sock: socket.socket | None = None

    # --- socket --------------------------------------------------------------------
    def listen(self) -> socket.socket:
        if os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid()):
            self.sock = socket.socket(fileno=3)          # systemd socket activation
            return self.sock
        path = self.socket_path
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)                         # a stale socket from a previous run
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o077)
        try:
            s.bind(path + ".new")
        except OSError as e:
            s.close()
            raise BadInputError(f"cannot listen on {path}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        os.chmod(path + ".new", 0o666)                  # every user may ask; SO_PEERCRED says who
        os.replace(path + ".new", path)
        s.listen(256)
        self.sock = s
        return s

    def serve_forever(self) -> None:
        s = self.sock or self.listen()
        s.settimeout(0.5)
        _log(f"serving store {self.store.root} on {self.socket_path or 'the socket systemd passed'}")
        while not self._stop.is_set():
            try:
                conn, _ = s.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            self._admit(conn)

    def stop(self) -> None:
        self._stop.set()

    # --- connections -----------------------------------------------------------------
    def _admit(self, conn: socket.socket) -> None:
        try:
            peer = _peer(conn)
        except OSError:
            conn.close()
            return
        with self._lock:
            busy = self._count >= self.limits.connections or self._per_uid.get(peer.uid, 0) >= self.limits.per_uid
            if not busy:
                self._count += 1
                self._per_uid[peer.uid] = self._per_uid.get(peer.uid, 0) + 1
        if busy:
            try:
                conn.settimeout(1.0)
                wire.send(conn, {"ok": False, "busy": True,
                                 "error": "the stager is busy (too many connections); try again"})
            except OSError:
                pass
            conn.close()
            return
        threading.Thread(target=self._handle, args=(conn, peer), daemon=True).start()

    def _release(self, peer: Peer) -> None:
        with self._lock:
            self._count -= 1
            left = self._per_uid.get(peer.uid, 1) - 1
            if left:
                self._per_uid[peer.uid] = left
            else:
                self._per_uid.pop(peer.uid, None)

    def _handle(self, conn: socket.socket, peer: Peer) -> None:
        fds: list[int] = []
        t0 = time.monotonic()
        try:
            try:
                req, fds = wire.recv(conn, wire.MAX_REQUEST, want_fd=True,
                                     deadline=t0 + self.limits.request_seconds)
            except (wire.WireError, OSError) as e:
                self._reply(conn, {"ok": False, "error": f"bad request: {e}"})
                return
            if len(fds) != 1:
                self._reply(conn, {"ok": False, "error": "a request carries exactly one image descriptor"})
                return
            try:
                reply = self.service.admit(fds[0], peer, req.get("policy"), str(req.get("path") or ""),
                                           req.get("context") if isinstance(req.get("context"), dict) else {})
            except Exception as e:  # noqa: BLE001 - one line back to the caller, never a dead stager
                reply = error_reply(e)
                if getattr(e, "detail", ""):    # what the caller may not see (e.g. a file it cannot read)
                    _log(f"uid {peer.uid} pid {peer.pid}: {e.detail}"[:2000])
            held = reply.pop(HELD, None)
            if held is not None:
                fds.append(held)                # closed with the request's below
            conn.settimeout(30.0)
            self._reply(conn, reply, held)
            how = reply.get("how", "error") if reply.get("object") or not reply.get("ok") else \
                f"{reply.get('how')} (no copy kept)"
            _log(f"uid {peer.uid} pid {peer.pid}: {how} "
                 f"{(reply.get('digest') or '')[:16]} {'allowed' if reply.get('allowed') else ''} "
                 f"{reply.get('error', '')} ({(time.monotonic() - t0) * 1000:.0f} ms)".replace("  ", " "))
        finally:
            for f in fds:
                try:
                    os.close(f)
                except OSError:
                    pass
            conn.close()
            self._release(peer)

    @staticmethod
    def _reply(conn: socket.socket, doc: dict, fd: int | None = None) -> None:
        try:
            wire.send(conn, doc, fd)
        except OSError:
            pass


def serve(store_dir: str, socket_path: str | None, limits: Limits = Limits(), durable: bool = True,
          max_size: int | None = None, per_user_bytes: int | None = None) -> int:
    store = Store(store_dir)
    store.init()
    srv = Server(store, socket_path, limits, durable, max_size, per_user_bytes)
    srv.listen()
    signal.signal(signal.SIGTERM, lambda *_: srv.stop())
    signal.signal(signal.SIGINT, lambda *_: srv.stop())
    srv.serve_forever()
    if socket_path and srv.sock is not None and not os.environ.get("LISTEN_FDS"):
        try:
            os.unlink(socket_path)
        except OSError:
            pass
    return 0
