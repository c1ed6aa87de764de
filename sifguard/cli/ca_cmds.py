"""`sifguard ca …`: the site CA's admin commands (argument handling and output only)."""

from __future__ import annotations

import datetime as dt
import os
import sys

from sifguard.ca.names import KEY_TYPES, REASON_NAMES
from sifguard.cli.common import print_json
from sifguard.errors import BadInputError, KeyMaterialError

# Heavy modules (cryptography, the CA store) are imported inside the commands, so that
# building the parser stays cheap for every other sifguard command.


def add_parsers(sub) -> None:
    ca = sub.add_parser("ca", help="site certificate authority: init, issue, revoke, crl, serve, tsa-init")
    cs = ca.add_subparsers(dest="ca_command", metavar="CA_COMMAND", parser_class=type(ca))
    ca.set_defaults(func=lambda a: (ca.print_help(), 2)[1])

    def p_(name, help_, func):
        p = cs.add_parser(name, help=help_)
        p.add_argument("--ca", required=True, metavar="DIR", help="CA directory")
        p.add_argument("--passphrase-file", metavar="F", help="CA key passphrase from file F")
        p.add_argument("--passphrase-env", metavar="VAR", help="CA key passphrase from $VAR")
        p.set_defaults(func=func)
        return p

    p = p_("init", "create root, issuing intermediate and OCSP responder certificates", cmd_init)
    p.add_argument("--name", required=True, help='site name, e.g. "Example HPC Site"')
    p.add_argument("--key-type", default="ec-p256", choices=KEY_TYPES)
    p.add_argument("--url", default="http://127.0.0.1:8080",
                   help="base URL of `ca serve`, baked into certificates (OCSP, caIssuers, CRL)")
    p.add_argument("--crl-hours", type=int, default=24, help="CRL nextUpdate (hours)")
    p.add_argument("--ocsp-validity-hours", type=int, default=4, help="OCSP response validity (hours)")
    p.add_argument("--tsa-policy", metavar="OID", help="time-stamping policy OID (default: a new 2.25.<uuid>)")

    p = p_("tsa-init", "issue the RFC 3161 time-stamping authority's key and certificate", cmd_tsa_init)
    p.add_argument("--tsa-policy", metavar="OID", help="policy OID (default: the CA's, else a new 2.25.<uuid>)")
    p.add_argument("--days", type=int, help="validity (default 5 years, cut at the issuing CA's end)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing TSA (its certificate stays valid: tokens it signed stay verifiable)")

    p = p_("issue", "issue a code-signing certificate", cmd_issue)
    p.add_argument("--cn", required=True, help="subject common name (the CA decides the subject)")
    p.add_argument("--email", help="e-mail subjectAltName")
    p.add_argument("--days", type=int, default=365)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--csr", metavar="REQ.pem", help="certificate request (its key never leaves the user)")
    g.add_argument("--out-key", metavar="KEY.pem", help="generate a key here (0600)")
    p.add_argument("--key-type", default="ec-p256", choices=KEY_TYPES, help="with --out-key")
    p.add_argument("--out-key-passphrase-file", metavar="F", help="encrypt the generated key with this passphrase")
    p.add_argument("--out", required=True, metavar="CERT.pem", help="leaf + intermediate (what `sign --cert` takes)")

    p = p_("revoke", "revoke a certificate", cmd_revoke)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--serial", metavar="HEX")
    g.add_argument("--cert", metavar="F")
    p.add_argument("--reason", default="unspecified", choices=REASON_NAMES)
    p.add_argument("--invalidity-date", metavar="WHEN",
                   help="when the key was (suspected) compromised or the certificate otherwise became "
                        "invalid: ISO-8601 date or date-time, UTC unless an offset is given; not in the future")

    p = p_("list", "list issued certificates", cmd_list)
    p.add_argument("--json", action="store_true")
    p.add_argument("--status", choices=("valid", "revoked", "expired"))

    p = p_("crl", "issue a new CRL (CRL number increases)", cmd_crl)
    p.add_argument("--out", metavar="F", help="also write it here (default: only the CA dir)")
    p.add_argument("--der", action="store_true", help="DER instead of PEM for --out / stdout")
    p.add_argument("--next-update-hours", type=int, help="override the configured nextUpdate")

    p = p_("serve", "serve OCSP, CRLs and CA certificates over HTTP", cmd_serve)
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    p.add_argument("--sign-with", choices=("responder", "issuer"), default="responder",
                   help="sign OCSP answers with the delegated responder cert (default) or the issuing CA "
                        "key (Apptainer's client rejects delegated responders)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core, at least 2)")
    p.add_argument("--access-log", action="store_true")
    p.add_argument("--no-metrics", action="store_true",
                   help="no Prometheus /metrics and /healthz (they cost ~10 µs a request)")

    p = p_("export-ocsp", "write pre-signed OCSP responses as static files for RFC 5019 GET", cmd_export)
    p.add_argument("--out", required=True, metavar="WWWDIR")
    p.add_argument("--sign-with", choices=("responder", "issuer"), default="responder")


def _passphrase(args) -> bytes | None:
    from sifguard.ca import inputs
    from sifguard.x509 import keys
    what = "--passphrase-file" if args.passphrase_file else "--passphrase-env"
    return inputs.passphrase(keys.read_passphrase(args.passphrase_file, args.passphrase_env), what)


def _open(args, settle: bool = False):
    """The CA store; `settle`: first settle issuances interrupted by a crash (write commands)."""
    from sifguard.ca import store as castore
    s = castore.CAStore(args.ca, _passphrase(args))
    if settle:
        notes = s.recover()
        for n in notes:
            print(f"sifguard: note: interrupted issuance settled: {n}", file=sys.stderr)
        if any("revoked" in n for n in notes):
            try:
                s.make_crl()
            except KeyMaterialError:
                pass
    return s


def _out_path(path: str, what: str, new: bool = False) -> str:
    """A file the command will write: its directory exists and is writable; `new`: it must not exist."""
    if not path or not path.strip():
        raise BadInputError(f"{what} must not be empty")
    if "\x00" in path:
        raise BadInputError(f"{what} contains a NUL character")
    full = os.path.abspath(path)
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        raise BadInputError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{what} {path}: directory {parent} is not writable")
    if os.path.isdir(full):
        raise BadInputError(f"{what} {path} is a directory")
    if new and os.path.lexists(full):
        raise BadInputError(f"{path} exists; refusing to overwrite a key")
    if not new and os.path.isfile(full):
        try:
            with open(full, "rb") as f:
                head = f.read(1 << 16)
        except OSError:
            head = b""
        if b"PRIVATE KEY-----" in head:
            raise BadInputError(f"{what} {path} holds a private key; refusing to overwrite it")
    return full


def cmd_init(args) -> int:
    from sifguard.ca import store as castore
    s = castore.init(args.ca, args.name, args.url, args.key_type, _passphrase(args),
                     args.crl_hours, args.ocsp_validity_hours, args.tsa_policy)
    print(f"created CA '{args.name}' in {args.ca}")
    print(f"  root:          {s.file(castore.ROOT_PEM)}  (distribute to verifiers as the trust root)")
    print(f"  intermediate:  {s.file(castore.INT_PEM)}")
    print(f"  OCSP responder {s.file(castore.OCSP_PEM)}")
    print(f"  TSA:           {s.file(castore.TSA_PEM)}  (policy {s.config['tsa_policy']}, served at /tsa)")
    print(f"  URLs in certificates: OCSP {s.urls.ocsp}  CRL {s.urls.crl}")
    return 0


def cmd_tsa_init(args) -> int:
    from sifguard.ca import inputs, store as castore, tsa
    policy = tsa.policy_oid(args.tsa_policy) if args.tsa_policy is not None else None
    days = inputs.days(args.days) if args.days is not None else None
    s = _open(args, settle=True)
    replaced = tsa.present(s)
    cert, policy = tsa.install(s, policy, days, args.force)
    print(f"{'replaced the' if replaced else 'issued a'} TSA certificate: {cert.subject.rfc4514_string()} serial "
          f"{castore.serial_hex(cert.serial_number)} valid until {cert.not_valid_after_utc:%Y-%m-%d}, policy {policy} "
          f"-> {s.file(castore.TSA_PEM)}" + (" (the old certificate stays valid)" if replaced else ""))
    return 0


def _csr_public_key(path: str):
    """The public key of a certificate request (its subject is ignored: the CA decides it)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from sifguard.x509 import keys
    try:
        with open(path, "rb") as f:
            data = f.read((1 << 20) + 1)
    except OSError as e:
        raise BadInputError(f"{path}: {e.strerror}") from None
    if len(data) > 1 << 20:
        raise BadInputError(f"{path}: larger than 1 MiB, not a certificate request")
    try:
        csr = (x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadInputError(f"{path}: not a certificate request") from None
    try:
        pub = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise BadInputError(f"{path}: unsupported key in the certificate request ({e})") from None
    keys._check_supported(pub, path)        # EC P-256/P-384, RSA >= 2048, Ed25519
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise BadInputError(f"{path}: the request's signature cannot be checked ({e})") from None
    if not valid:
        raise BadInputError(f"{path}: the request's signature does not verify")
    return pub


def cmd_issue(args) -> int:
    from sifguard.ca import files, inputs, profiles, store as castore
    from sifguard.x509 import keys
    # every input is checked before a key is generated or a row written
    cn = inputs.common_name(args.cn)
    email = inputs.email(args.email) if args.email is not None else None
    days = inputs.days(args.days)
    out = _out_path(args.out, "--out")
    out_key = kp = None
    if args.out_key:
        out_key = _out_path(args.out_key, "--out-key", new=True)
        if out_key == out or os.path.realpath(out_key) == os.path.realpath(out):
            raise BadInputError("--out and --out-key name the same file")
        if args.out_key_passphrase_file:
            kp = inputs.passphrase(keys.read_passphrase(args.out_key_passphrase_file), "--out-key-passphrase-file")
    elif args.out_key_passphrase_file:
        raise BadInputError("--out-key-passphrase-file goes with --out-key (a CSR's key stays with its owner)")
    pub = _csr_public_key(args.csr) if args.csr else None
    s = _open(args, settle=True)
    for target in filter(None, (out, out_key)):
        files.sweep(os.path.dirname(target), os.path.basename(target))
    new_key = None
    if pub is None:
        new_key = profiles.generate_key(args.key_type)
        pub = new_key.public_key()
    cert = s.issue(pub, cn, email, days, out=out, out_key=out_key)
    serial = castore.serial_hex(cert.serial_number)
    # The row (and its pending-issuance mark) is committed: now the files, certificate first,
    # the key last and only as a whole new file — a key never exists without its certificate.
    key_written = False
    try:
        files.replace(out, castore.pem(cert) + castore.pem(s.intermediate), 0o644)
        if new_key is not None:
            files.create(out_key, castore.key_bytes(new_key, kp), 0o600)
            key_written = True
    except BaseException:
        if new_key is not None and not key_written:
            s.abandon_issuance(serial)
        raise
    s.issued_files_written(serial)
    print(f"issued {cert.subject.rfc4514_string()} serial {serial} "
          f"valid until {cert.not_valid_after_utc:%Y-%m-%d} -> {args.out}")
    return 0


def cmd_revoke(args) -> int:
    from sifguard.ca import inputs, store as castore
    from sifguard.x509 import keys
    invalid = None
    if args.invalidity_date is not None:
        invalid = inputs.instant(args.invalidity_date, "--invalidity-date")
        inputs.invalidity_date(invalid, castore.utcnow())    # before anything is opened or settled
    cert = None
    if args.cert:
        cert = keys.load_certificates(args.cert, "certificate")[0]
        serial = castore.serial_hex(cert.serial_number)
    else:
        serial = castore.parse_serial(args.serial)
    s = _open(args, settle=True)
    if cert is not None:
        from sifguard.x509.chain import fingerprint
        row = s.get(serial)
        if row is not None and row.fingerprint != fingerprint(cert):
            # same serial, different certificate: another CA's, never ours to revoke
            raise BadInputError(f"{args.cert}: not a certificate issued by this CA (serial {serial} is another one)")
    row = s.revoke(serial, args.reason, invalid)
    try:
        s.make_crl(issuer="root" if row.profile == "intermediate" else "intermediate")
        note = "CRL reissued"
    except KeyMaterialError:
        note = "CRL not reissued (CA key locked): run 'sifguard ca crl'"
    since = row.as_dict(0)["invalidity_date"]
    print(f"revoked {row.subject} serial {row.serial} ({row.reason}"
          + (f", invalid since {since}" if since else "") + f"); {note}")
    return 0


def cmd_list(args) -> int:
    s = _open(args)
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    rows = [r.as_dict(now) for r in s.rows(args.status)]
    if args.json:
        print_json({"ca": s.config["name"], "certificates": rows})
        return 0
    print(f"{'SERIAL':<41} {'STATUS':<8} {'NOT AFTER':<20} {'PROFILE':<15} SUBJECT")
    for r in rows:
        print(f"{r['serial']:<41} {r['status']:<8} {r['not_after']:<20} {r['profile']:<15} {r['subject']}"
              + (f" <{', '.join(r['email'])}>" if r["email"] else ""))
    return 0


def cmd_crl(args) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from sifguard.ca import store as castore
    from sifguard.ca import inputs
    nu = None
    if args.next_update_hours is not None:
        nu = dt.timedelta(hours=inputs.whole_number(args.next_update_hours, "--next-update-hours", 1,
                                                     inputs.MAX_CRL_HOURS))
    out = _out_path(args.out, "--out") if args.out is not None else None
    s = _open(args, settle=True)
    crl = s.make_crl(nu)
    enc = serialization.Encoding.DER if args.der else serialization.Encoding.PEM
    data = crl.public_bytes(enc)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    if out:
        castore.write_public(out, data)
        print(f"CRL #{number}: {len(list(crl))} revoked, next update "
              f"{crl.next_update_utc:%Y-%m-%d %H:%M}Z -> {args.out}")
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_serve(args) -> int:
    from sifguard.ocsp import server
    from sifguard.ocsp.responder import make_app
    from sifguard.ca import inputs
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not port.isascii() or not 1 <= int(port) <= 65535:
        raise BadInputError(f"--listen wants HOST:PORT (port 1-65535), not {args.listen!r}")
    inputs.whole_number(args.workers, "--workers", 0, 256)
    app = make_app(args.ca, _passphrase(args), args.sign_with)   # keys load (or fail) before the fork
    tsa = ", time-stamping (/tsa)" if app.tsa.authority is not None else ""
    print(f"sifguard ca serve: OCSP, CRL{tsa} and CA certificates for '{app.store.config['name']}' "
          f"on http://{args.listen}/", file=sys.stderr, flush=True)
    server.serve(app, args.listen, args.workers or server.default_workers(), access_log=args.access_log,
                 metrics=not args.no_metrics)
    return 0


def _out_dir(path: str, what: str) -> str:
    """A directory the command fills: it exists (or its parent does, to create it)."""
    if not path or not path.strip():
        raise BadInputError(f"{what} must not be empty")
    full = os.path.abspath(path)
    if os.path.lexists(full) and not os.path.isdir(full):
        raise BadInputError(f"{what} {path} exists and is not a directory")
    parent = full if os.path.isdir(full) else os.path.dirname(full)
    if not os.path.isdir(parent):
        raise BadInputError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{what} {path}: directory {parent} is not writable")
    return full


def cmd_export(args) -> int:
    from sifguard.ocsp.export import export
    _out_dir(args.out, "--out")
    n = export(_open(args), args.out, args.sign_with)
    print(f"wrote {n} pre-signed OCSP responses under {args.out} (serve with config/nginx-ocsp.conf)")
    return 0
