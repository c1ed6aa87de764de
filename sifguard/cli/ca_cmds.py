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
    ca = sub.add_parser("ca", help="site certificate authority: init, issue, revoke, crl, serve")
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

    p = p_("export-ocsp", "write pre-signed OCSP responses as static files for RFC 5019 GET", cmd_export)
    p.add_argument("--out", required=True, metavar="WWWDIR")
    p.add_argument("--sign-with", choices=("responder", "issuer"), default="responder")


def _passphrase(args) -> bytes | None:
    from sifguard.x509 import keys
    return keys.read_passphrase(args.passphrase_file, args.passphrase_env)


def _open(args):
    from sifguard.ca import store as castore
    return castore.CAStore(args.ca, _passphrase(args))


def cmd_init(args) -> int:
    from sifguard.ca import store as castore
    s = castore.init(args.ca, args.name, args.url, args.key_type, _passphrase(args),
                     args.crl_hours, args.ocsp_validity_hours)
    print(f"created CA '{args.name}' in {args.ca}")
    print(f"  root:          {s.file(castore.ROOT_PEM)}  (distribute to verifiers as the trust root)")
    print(f"  intermediate:  {s.file(castore.INT_PEM)}")
    print(f"  OCSP responder {s.file(castore.OCSP_PEM)}")
    print(f"  URLs in certificates: OCSP {s.urls.ocsp}  CRL {s.urls.crl}")
    return 0


def cmd_issue(args) -> int:
    from cryptography import x509
    from sifguard.ca import profiles, store as castore
    from sifguard.x509 import keys
    if args.days <= 0:
        raise BadInputError("--days must be positive")
    s = _open(args)
    if args.csr:
        try:
            with open(args.csr, "rb") as f:
                data = f.read(1 << 20)
        except OSError as e:
            raise BadInputError(f"{args.csr}: {e.strerror}") from None
        try:
            csr = (x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data))
        except ValueError:
            raise BadInputError(f"{args.csr}: not a certificate request") from None
        if not csr.is_signature_valid:
            raise BadInputError(f"{args.csr}: the request's signature does not verify")
        pub, new_key = csr.public_key(), None
        keys._check_supported(pub, args.csr)
    else:
        if os.path.exists(args.out_key):
            raise BadInputError(f"{args.out_key} exists; refusing to overwrite a key")
        new_key = profiles.generate_key(args.key_type)
        pub = new_key.public_key()
    cert = s.issue(pub, args.cn, args.email, args.days)
    # The row is committed: only now do files appear (a crash leaves no unrecorded certificate).
    if new_key is not None:
        kp = keys.read_passphrase(args.out_key_passphrase_file) if args.out_key_passphrase_file else None
        castore.write_private(args.out_key, castore.key_bytes(new_key, kp))
    castore.write_public(args.out, castore.pem(cert) + castore.pem(s.intermediate))
    print(f"issued {cert.subject.rfc4514_string()} serial {castore.serial_hex(cert.serial_number)} "
          f"valid until {cert.not_valid_after_utc:%Y-%m-%d} -> {args.out}")
    return 0


def cmd_revoke(args) -> int:
    from sifguard.ca import store as castore
    from sifguard.x509 import keys
    s = _open(args)
    if args.cert:
        serial = castore.serial_hex(keys.load_certificates(args.cert, "certificate")[0].serial_number)
    else:
        serial = castore.parse_serial(args.serial)
    row = s.revoke(serial, args.reason)
    try:
        s.make_crl(issuer="root" if row.profile == "intermediate" else "intermediate")
        note = "CRL reissued"
    except KeyMaterialError:
        note = "CRL not reissued (CA key locked): run 'sifguard ca crl'"
    print(f"revoked {row.subject} serial {row.serial} ({row.reason}); {note}")
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
    s = _open(args)
    nu = dt.timedelta(hours=args.next_update_hours) if args.next_update_hours else None
    if nu is not None and nu <= dt.timedelta(0):
        raise BadInputError("--next-update-hours must be positive")
    crl = s.make_crl(nu)
    enc = serialization.Encoding.DER if args.der else serialization.Encoding.PEM
    data = crl.public_bytes(enc)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    if args.out:
        castore.write_public(args.out, data)
        print(f"CRL #{number}: {len(list(crl))} revoked, next update "
              f"{crl.next_update_utc:%Y-%m-%d %H:%M}Z -> {args.out}")
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_serve(args) -> int:
    from sifguard.ocsp import server
    from sifguard.ocsp.responder import make_app
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(f"--listen wants HOST:PORT, not {args.listen!r}")
    app = make_app(args.ca, _passphrase(args), args.sign_with)   # keys load (or fail) before the fork
    print(f"sifguard ca serve: OCSP, CRL and CA certificates for '{app.store.config['name']}' "
          f"on http://{args.listen}/", file=sys.stderr, flush=True)
    server.serve(app, args.listen, args.workers or server.default_workers(), access_log=args.access_log)
    return 0


def cmd_export(args) -> int:
    from sifguard.ocsp.export import export
    n = export(_open(args), args.out, args.sign_with)
    print(f"wrote {n} pre-signed OCSP responses under {args.out} (serve with config/nginx-ocsp.conf)")
    return 0
