"""`sifguard inspect | sign | verify`: argument handling and output only."""

from __future__ import annotations


from sifguard.cli.common import ProgressBar, print_json
from sifguard.errors import KeyMaterialError, SignatureError
from sifguard.sif.format import HASHTYPES
from sifguard.sif.image import SifImage

# cryptography-backed modules are imported inside the commands (cheap parser build).


def add_parsers(sub) -> None:
    p = sub.add_parser("inspect", help="show header, objects, groups, signatures and signers")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("sign", help="sign object groups with one or more keys (DSSE)")
    p.add_argument("image")
    p.add_argument("--key", action="append", required=True, metavar="KEY.pem",
                   help="PEM private key; repeat for several signatures in one envelope")
    p.add_argument("--cert", action="append", default=[], metavar="CERT.pem",
                   help="signer certificate (leaf first, chain may follow); stored in the image")
    p.add_argument("--chain", action="append", default=[], metavar="CHAIN.pem",
                   help="intermediate certificates to store with the signer's certificate")
    p.add_argument("--group-id", action="append", type=int, default=[], metavar="N",
                   help="sign only this object group (repeatable)")
    p.add_argument("--object-id", action="append", type=int, default=[], metavar="ID",
                   help="sign only these objects (repeatable)")
    _passphrase_args(p)
    _tsa_args(p, required=False)
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("timestamp", help="add RFC 3161 time-stamps to an image's existing signatures")
    p.add_argument("image")
    p.add_argument("--group-id", action="append", type=int, default=[], metavar="N",
                   help="only the signatures of this object group (repeatable)")
    _tsa_args(p, required=True)
    p.set_defaults(func=cmd_timestamp)

    p = sub.add_parser("verify", help="verify signatures against keys, X.509 roots, or a site policy")
    p.add_argument("image")
    p.add_argument("--key", action="append", default=[], metavar="PUB.pem",
                   help="trusted public key (or certificate); repeatable")
    p.add_argument("--roots", action="append", default=[], metavar="ROOTS.pem",
                   help="trusted root certificates (PEM bundle); repeatable")
    p.add_argument("--cert", action="append", default=[], metavar="CERT.pem",
                   help="signer certificate, for images that do not carry one")
    p.add_argument("--intermediates", action="append", default=[], metavar="F",
                   help="intermediate certificates to build the path with")
    p.add_argument("--tsa-roots", action="append", default=[], metavar="F",
                   help="roots trusted to vouch for RFC 3161 time-stamps (default: --roots)")
    p.add_argument("--group-id", action="append", type=int, default=[], metavar="N",
                   help="verify only this object group (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_verify)


def _tsa_args(p, required: bool) -> None:
    p.add_argument("--tsa", required=required, metavar="URL",
                   help="RFC 3161 time-stamping authority (e.g. https://ca.example.org/tsa): each new "
                        "signature gets a token, so it can be verified after its certificate expires")
    p.add_argument("--tsa-roots", action="append", default=[], metavar="ROOTS.pem",
                   help="check the TSA's tokens against these roots before writing (default: trust "
                        "is decided at verification)")
    p.add_argument("--tsa-policy", metavar="OID", help="ask the TSA for this policy")
    p.add_argument("--tsa-timeout", type=float, default=10.0, metavar="S", help="seconds per request (default 10)")


def _stamper(args):
    """A function signature value -> token DER, or None without --tsa."""
    if not getattr(args, "tsa", None):
        return None
    from sifguard.errors import BadInputError
    from sifguard.tsp import request, token
    from sifguard.x509 import keys
    if not 0 < args.tsa_timeout <= 300:
        raise BadInputError("--tsa-timeout must be between 0 and 300 seconds")
    roots = [c for p in args.tsa_roots for c in keys.load_certificates(p, "TSA roots")]

    def stamp(sig: bytes) -> bytes:
        der = request.fetch_token(args.tsa, sig, timeout=args.tsa_timeout, policy=args.tsa_policy)
        if roots:
            try:
                token.verify(token.parse(der), sig, roots)
            except token.TimestampError as e:
                raise request.TsaError(f"{args.tsa}: token not trusted by --tsa-roots: {e}") from None
        return der
    return stamp


def _passphrase_args(p) -> None:
    p.add_argument("--passphrase-file", metavar="F", help="read the key passphrase from F")
    p.add_argument("--passphrase-env", metavar="VAR", help="read the key passphrase from $VAR")


def cmd_inspect(args) -> int:
    with SifImage(args.image) as img:
        info = describe(img)
    if args.json:
        print_json(info)
        return 0
    h = info["header"]
    print(f"{args.image}: SIF v01, arch {h['arch']}, uuid {h['uuid']}, "
          f"{h['descriptors_used']}/{h['descriptors_total']} descriptors used")
    print(f"{'ID':>4} {'GROUP':>5} {'LINK':>8} {'OFFSET':>12} {'SIZE':>12}  TYPE")
    for o in info["objects"]:
        link = o["linked_group"] and f"g{o['linked_group']}" or (o["linked_object"] or "-")
        extra = o.get("partition") or {}
        detail = " ".join(str(v) for v in extra.values())
        print(f"{o['id']:>4} {o['group'] or '-':>5} {link!s:>8} {o['offset']:>12} {o['size']:>12}  "
              f"{o['type']} {detail} {o['name']}".rstrip())
    for s in info["signatures"]:
        who = ", ".join(e.get("subject") or e.get("keyid", "") for e in s["entries"]) or s["type"]
        print(f"signature object {s['object']} on group {s['group']}: {s['type']} — {who}")
    return 0


def describe(img: SifImage) -> dict:
    from sifguard.integrity import dsse
    from sifguard.x509.chain import ChainError, identity, load_embedded
    h = img.header
    objects, sigs = [], []
    for d in img.objects:
        o = {"id": d.id, "type": d.datatype_name, "datatype": d.datatype, "group": d.group_id,
             "linked_group": d.linked_group, "linked_object": d.linked_object, "offset": d.offset,
             "size": d.size, "name": d.name, "created": d.created, "uid": d.uid, "gid": d.gid}
        if d.partition_info():
            o["partition"] = d.partition_info()
        objects.append(o)
        if d.is_signature:
            kind, env = dsse.classify(img.read_object(d))
            entry = {"object": d.id, "group": d.linked_group or None,
                     "linked_object": d.linked_object or None,
                     "hash": HASHTYPES.get(d.signature_info()[0], "invalid"), "type": kind, "entries": []}
            if env is not None:
                for s in env.signatures:
                    e = {"keyid": s.keyid}
                    if s.x5c:
                        try:
                            e.update(identity(load_embedded(s.x5c[:1])[0]).as_dict())
                        except ChainError:
                            e["subject"] = "(malformed certificate)"
                    entry["entries"].append(e)
            elif kind != "unknown":
                entry["entries"].append({"pgp_fingerprint": d.signature_info()[1].hex().upper()})
            sigs.append(entry)
    return {"image": img.path,
            "header": {"launch_script": h.launch_script.rstrip(b"\0").decode("utf-8", "replace"),
                       "version": "01", "arch": h.arch_name, "uuid": h.uuid.hex(),
                       "created": h.created, "modified": h.modified,
                       "descriptors_total": h.descriptors_total,
                       "descriptors_used": len(img.objects),
                       "descriptors_offset": h.descriptors_offset,
                       "data_offset": h.data_offset, "data_size": h.data_size},
            "groups": img.group_ids(), "objects": objects, "signatures": sigs}


def load_signers(key_paths, cert_paths, chain_paths, passphrase) -> list:
    from sifguard.integrity.sign import Signer
    from sifguard.x509 import keys
    priv = [keys.load_private_key(k, passphrase) for k in key_paths]
    bundles = [keys.load_certificates(c, "certificate") for c in cert_paths]
    extra = [c for p in chain_paths for c in keys.load_certificates(p, "chain")]
    used = set()
    signers = []
    for k in priv:
        pub = keys.public_bytes(k.public_key())
        chain = ()
        for i, b in enumerate(bundles):
            if keys.public_bytes(b[0].public_key()) == pub:
                chain = tuple(b) + tuple(c for c in extra if c not in b)
                used.add(i)
                break
        signers.append(Signer(k, chain))
    for i, b in enumerate(bundles):
        if i not in used:
            raise KeyMaterialError(f"{cert_paths[i]}: certificate does not match any --key")
    if extra and not bundles:
        raise KeyMaterialError("--chain needs --cert")
    return signers


def cmd_sign(args) -> int:
    from sifguard.integrity.sign import sign_image
    from sifguard.x509 import keys
    passphrase = keys.read_passphrase(args.passphrase_file, args.passphrase_env)
    signers = load_signers(args.key, args.cert, args.chain, passphrase)
    bar = ProgressBar(args.image, "hashing")
    ids = sign_image(args.image, signers, args.group_id or None, args.object_id or None, bar, _stamper(args))
    bar.finish()
    who = ", ".join(s.chain[0].subject.rfc4514_string() if s.chain else keys.keyid(s.key.public_key())
                    for s in signers)
    print(f"signed {args.image}: added signature object(s) {', '.join(map(str, ids))} by {who}"
          + (f", time-stamped by {args.tsa}" if args.tsa else ""))
    return 0


def cmd_timestamp(args) -> int:
    from sifguard.integrity.stamp import timestamp_image
    done = timestamp_image(args.image, _stamper(args), args.group_id or None)
    for st in done:
        if st.entries:
            print(f"group {st.group}: signature object {st.old_object} -> {st.new_object}: time-stamped "
                  f"{', '.join(st.entries)}")
        for why in st.skipped:
            print(f"group {st.group}: signature object {st.old_object}: not time-stamped: {why}")
    return 0


def trust_from_args(args):
    from sifguard.integrity.verify import Trust
    from sifguard.x509 import keys
    modes = sum(bool(x) for x in (args.key, args.roots, getattr(args, "policy", None)))
    if modes != 1:
        raise KeyMaterialError("give exactly one of --key, --roots or --policy")
    if args.key:
        if args.cert or args.intermediates:
            raise KeyMaterialError("--cert/--intermediates go with --roots, not --key")
        return Trust(keys=tuple(keys.load_public_key(k) for k in args.key))
    tsa = getattr(args, "tsa_roots", None)
    return Trust(
        tsa_roots=tuple(c for p in tsa for c in keys.load_certificates(p, "TSA roots")) if tsa else None,
        roots=tuple(c for p in args.roots for c in keys.load_certificates(p, "roots")),
        intermediates=tuple(c for p in args.intermediates for c in keys.load_certificates(p, "intermediates")),
        certs=tuple(keys.load_certificates(p, "certificate")[0] for p in args.cert))


def cmd_verify(args) -> int:
    if getattr(args, "policy", None):
        from sifguard.cli.policy_cmds import verify_with_policy
        return verify_with_policy(args)
    from sifguard.integrity.verify import verify_image
    trust = trust_from_args(args)
    bar = ProgressBar(args.image, "verifying")
    with SifImage(args.image) as img:
        rep = verify_image(img, trust, args.group_id or None, bar)
    bar.finish()
    if args.json:
        print_json(rep.as_dict())
    else:
        for s in rep.signatures:
            who = s.signer.subject if s.signer else (s.key or s.keyid or s.kind)
            print(f"group {s.group}, signature object {s.object_id}[{s.index}] ({s.kind}"
                  f"{', ' + s.algorithm if s.algorithm else ''}): {s.status} — {who}: {s.reason}")
            if s.time_basis:
                t = s.time_dict()
                print(f"  judged at {'genTime ' + t['gen_time'] + ' (time-stamped by ' + t['tsa'] + ')' if t['basis'] == 'timestamp' else 'now: ' + t['why']}")
    if not rep.verified:
        raise SignatureError(f"{args.image}: refused: {rep.reason}")
    if not args.json:
        print(f"{args.image}: verified — {rep.reason}")
    return 0
