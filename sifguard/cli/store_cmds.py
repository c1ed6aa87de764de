"""`sifguard store …`: the verified image store (argument handling and output only)."""

from __future__ import annotations

import json
import os
import stat
import sys
import time

from sifguard.errors import BadInputError


def add_parsers(sub) -> None:
    from sifguard.cli.slurm_cmds import _size
    from sifguard.store.layout import DEFAULT_DIR
    p = sub.add_parser("store", help="the verified image store: stager, pre-staging, listing, collection")
    ss = p.add_subparsers(dest="store_command", metavar="STORE_COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    s = ss.add_parser("serve", help="run the privileged stager on a Unix socket (root, foreground)")
    s.add_argument("--store", default=DEFAULT_DIR, help=f"store directory (default {DEFAULT_DIR})")
    s.add_argument("--socket", default="/run/sifguard/stager.sock",
                   help="Unix socket to listen on (ignored under systemd socket activation)")
    s.add_argument("--max-connections", type=int, default=128)
    s.add_argument("--max-per-user", type=int, default=32)
    s.add_argument("--staging-concurrency", type=int, default=2, help="stagings that copy at once")
    s.add_argument("--max-image", type=_size, help="largest image staged (e.g. 64G; default: no limit)")
    s.add_argument("--max-bytes-per-user", dest="max_per_user_bytes", type=_size, metavar="SIZE",
                   help="bytes of copies one user's requests may keep in the store (e.g. 50G; default: no bound); "
                        "over it, images are still decided and run from sealed copies")
    s.add_argument("--no-fsync", action="store_true",
                   help="do not fsync copies (a node-local scratch store that a crash may lose)")
    s.set_defaults(func=cmd_serve)

    st = ss.add_parser("stage", help="stage an image now (root), e.g. a curated catalogue")
    st.add_argument("image")
    st.add_argument("--store", default=DEFAULT_DIR)
    st.add_argument("--policy", help="also verify and record findings under this policy's trust roots")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stage)

    ls = ss.add_parser("list", help="list stored images")
    ls.add_argument("--store", default=DEFAULT_DIR)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    g = ss.add_parser("gc", help="remove least recently used images over a size budget (never one in use)")
    g.add_argument("--store", default=DEFAULT_DIR)
    g.add_argument("--budget", type=_size, required=True, help="size to shrink the store to, e.g. 200G")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_gc)


def _root(what: str) -> None:
    if os.geteuid() != 0:
        raise BadInputError(f"`sifguard store {what}` must run as root (the store is root-owned)")


def cmd_serve(args) -> int:
    _root("serve")
    from sifguard.store.server import Limits, serve
    if min(args.max_connections, args.max_per_user, args.staging_concurrency) < 1:
        raise BadInputError("connection and staging limits must be at least 1")
    return serve(args.store, args.socket, Limits(args.max_connections, args.max_per_user, args.staging_concurrency),
                 durable=not args.no_fsync, max_size=args.max_image, per_user_bytes=args.max_per_user_bytes)


def cmd_stage(args) -> int:
    _root("stage")
    from sifguard.store.layout import Store
    from sifguard.store.service import HELD, Peer, Service
    store = Store(args.store)
    store.init()
    fd = _open_regular(args.image)
    t0 = time.monotonic()
    try:
        from sifguard.slurm.gate import opened_path
        where = opened_path(fd)            # the path of what was opened, not the name resolved again
        if where is None:
            raise BadInputError(f"{args.image}: moved or removed while it was being opened")
        svc = Service(store)
        reply = svc.admit(fd, Peer(os.getpid(), 0, 0), os.path.abspath(args.policy) if args.policy else None,
                          where, {})
        held = reply.pop(HELD, None)          # the entry held for a caller that runs it: nothing runs here
        if held is not None:
            os.close(held)
    finally:
        os.close(fd)
    reply["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    else:
        what = {"staged": "staged", "indexed": "already staged", "waited": "staged meanwhile",
                "deduplicated": "same content already stored"}.get(reply["how"], reply["how"])
        print(f"{args.image}: {what}: {reply['object'] or '(not kept: it does not verify)'} "
              f"({reply['elapsed_ms']:.0f} ms)")
        if "verdict" in reply:
            print(f"  under {args.policy}: {reply['verdict']['decision']}: {reply['verdict']['reason']}")
    return 0 if reply.get("object") else 1


def _open_regular(path: str) -> int:
    """Open an image as root without opening anything else: the name (which may be a
    user's symlink) is resolved once to an O_PATH descriptor, and only a regular file is
    then opened for reading — through that descriptor, so a FIFO or a device a symlink
    points at is never opened (a tape rewinds, a watchdog arms, a FIFO's writer wakes)."""
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise BadInputError(f"{path}: {e.strerror}") from None
    try:
        mode = os.fstat(pfd).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory (sandboxes carry no signature)" if stat.S_ISDIR(mode) else "not a regular file"
            raise BadInputError(f"{path}: {what}: not staged")
        try:
            return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            raise BadInputError(f"{path}: {e.strerror}") from None
    finally:
        os.close(pfd)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_list(args) -> int:
    _root("list")     # users may not list the store's directories (0711: entries are found by key)
    from sifguard.store.gc import entries
    from sifguard.store.layout import Store
    store = Store(args.store)
    store.check_safe()
    es = entries(store)
    if args.json:
        print(json.dumps({"store": store.root, "entries": [e.as_dict() for e in es],
                          "total": sum(e.size for e in es)}, indent=2))
        return 0
    print(f"{'DIGEST':<18} {'SIZE':>10}  {'LAST USED':<19}  {'IN USE':<6} SOURCES")
    for e in es:
        print(f"{e.digest[:16]:<18} {_human(e.size):>10}  "
              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e.last_used))}  {'yes' if e.in_use else 'no':<6} "
              f"{e.sources}")
    print(f"{len(es)} images, {_human(sum(e.size for e in es))} in {store.root}")
    return 0


def cmd_gc(args) -> int:
    _root("gc")
    from sifguard.store.gc import collect
    from sifguard.store.layout import Store
    store = Store(args.store)
    store.check_safe()
    res = collect(store, args.budget)
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    else:
        print(f"removed {len(res.removed)} images ({_human(res.freed)}); {len(res.kept_in_use)} kept because a task "
              f"holds them; store {_human(res.total_before)} → {_human(res.total_after)} "
              f"(budget {_human(args.budget)})")
    if res.total_after > args.budget:
        print("sifguard: store still over budget: images in use cannot be removed", file=sys.stderr)
    return 0
