"""Real certificates for tests, made with cryptography's builders (no mocks)."""
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc)


def new_key(kind="ec-p256"):
    return {"ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "rsa": lambda: rsa.generate_private_key(65537, 2048),
            "ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert(subject_key, cn, issuer_key=None, issuer=None, ca=False, eku=(ExtendedKeyUsageOID.CODE_SIGNING,),
         digital_signature=True, days=30, start=None, email=None, path_length=None):
    issuer_key = issuer_key or subject_key
    start = start or NOW - dt.timedelta(hours=1)
    b = (x509.CertificateBuilder().subject_name(name(cn))
         .issuer_name(issuer.subject if issuer else name(cn))
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(digital_signature, False, False, False, False, False, False, False, False),
                            critical=True)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if email:
        b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    algo = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(issuer_key, algo)


def pem(*certs) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key, passphrase: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def write(path, data: bytes, mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    import os
    os.chmod(path, mode)
    return str(path)


class SiteChain:
    """root -> intermediate -> leaf, written to a directory."""

    def __init__(self, d, leaf_kind="ec-p256", cn="builder", email="builder@hpc.example.org", **leaf_kw):
        self.root_key, self.int_key, self.leaf_key = new_key("ec-p384"), new_key("ec-p256"), new_key(leaf_kind)
        self.root = cert(self.root_key, "Site Root", ca=True)
        self.inter = cert(self.int_key, "Site Issuing CA", self.root_key, self.root, ca=True)
        self.leaf = cert(self.leaf_key, cn, self.int_key, self.inter, email=email, **leaf_kw)
        self.root_pem = write(d / f"{cn}-root.pem", pem(self.root))
        self.inter_pem = write(d / f"{cn}-inter.pem", pem(self.inter))
        self.leaf_pem = write(d / f"{cn}-leaf.pem", pem(self.leaf))
        self.bundle_pem = write(d / f"{cn}-bundle.pem", pem(self.leaf, self.inter))
        self.key_pem = write(d / f"{cn}.key", key_pem(self.leaf_key), 0o600)
