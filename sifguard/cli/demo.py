"""`sifguard demo`: a throw-away root and code-signing certificate, a small SIF built
on the spot, signed with the certificate chain, verified from the root alone, then
tampered with and refused."""

from __future__ import annotations

import datetime as dt
import os
import struct

from sifguard.sif.format import DT_PARTITION
from sifguard.sif.image import NewObject, SifImage, create


def add_parsers(sub) -> None:
    p = sub.add_parser("demo", help="create a throw-away key/cert, sign and verify a small SIF")
    p.add_argument("--dir", default="sifguard-demo", help="work directory (created 0700)")
    p.set_defaults(func=cmd_demo)


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sifguard demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def demo_chain():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID
    now = dt.datetime.now(dt.timezone.utc)
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder().subject_name(_name("Demo Root")).issuer_name(_name("Demo Root"))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("demo-builder")).issuer_name(root.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("builder@demo.invalid")]), critical=False)
            .sign(root_key, hashes.SHA256()))
    return leaf_key, leaf, root


def demo_image(path: str) -> None:
    """A tiny deterministic-looking SIF: a definition file and a 'squashfs' partition."""
    deffile = b"Bootstrap: scratch\n%runscript\n    echo hello from sifguard\n"
    part = b"hsqs" + os.urandom(64 << 10)
    extra = struct.pack("<ii", 1, 2) + b"02\x00"   # squashfs, primary system, amd64
    create(path, [NewObject(0x4001, data=deffile, group=1),
                  NewObject(DT_PARTITION, data=part, group=1, extra=extra)])


def cmd_demo(args) -> int:
    from cryptography.hazmat.primitives import serialization
    from sifguard.integrity.sign import Signer, sign_image
    from sifguard.integrity.verify import Trust, verify_image
    os.makedirs(args.dir, mode=0o700, exist_ok=True)
    os.chmod(args.dir, 0o700)
    key, leaf, root = demo_chain()
    key_path = os.path.join(args.dir, "builder.key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    for name, cert in (("builder.pem", leaf), ("root.pem", root)):
        with open(os.path.join(args.dir, name), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    img = os.path.join(args.dir, "demo.sif")
    demo_image(img)
    print(f"1. built {img} ({os.path.getsize(img)} bytes) and a throw-away root + code-signing cert in {args.dir}/")
    ids = sign_image(img, [Signer(key, (leaf,))])
    print(f"2. signed it: signature object {ids[0]} carries CN=demo-builder's certificate")
    trust = Trust(roots=(root,))
    with SifImage(img) as i:
        rep = verify_image(i, trust)
    s = rep.signers()[0]
    print(f"3. verify from the root alone: {'VERIFIED' if rep.verified else 'REFUSED'} — signer "
          f"{s.signer.subject} <{', '.join(s.signer.emails)}> serial {s.signer.serial} "
          f"fingerprint sha256:{s.signer.fingerprint[:16]}…")
    with SifImage(img, writable=True) as i:
        d = [o for o in i.objects if o.datatype == DT_PARTITION][0]
        b = os.pread(i.fileno(), 1, d.offset + 100)
        os.pwrite(i.fileno(), bytes([b[0] ^ 1]), d.offset + 100)
    with SifImage(img) as i:
        rep2 = verify_image(i, trust)
    print(f"4. after flipping one bit of the partition: {'VERIFIED' if rep2.verified else 'REFUSED'} — {rep2.reason}")
    return 0 if rep.verified and not rep2.verified else 1
