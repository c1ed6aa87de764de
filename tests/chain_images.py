"""Hostile certificate sets for path-building tests and the bench: real certificates
(cryptography's builders) and real SIF images signed with an `x5c` the attacker stuffed."""
import datetime as dt
import os
import shutil

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, ed448

from pki import NOW, cert, name, new_key

HERE = os.path.dirname(os.path.abspath(__file__))
ONE_GROUP = os.path.join(HERE, "data", "apptainer", "images", "one-group.sif")


def ca_cert(subject_key, cn, issuer_key, issuer_cn, serial=None, path_length=None, extensions=()):
    """A CA certificate `cn` (key subject_key) signed by issuer_key under the name issuer_cn."""
    b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(issuer_cn))
         .public_key(subject_key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True))
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    algo = None if isinstance(issuer_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    return b.sign(issuer_key, algo)


def same_key_loop(n):
    """Leaf signed by "Loop CA" plus n self-issued "Loop CA" certificates, one key, n serials:
    every one of them is a valid issuer of every other."""
    k = ec.generate_private_key(ec.SECP256R1())
    cas = [ca_cert(k, "Loop CA", k, "Loop CA") for _ in range(n)]
    leaf_key = new_key("ec-p256")
    leaf = cert(leaf_key, "looper", k, cas[0])
    return leaf_key, leaf, cas


def cross_signed_loop(n):
    """n keys all named "Loop CA", every key certified by every key (n*n certificates)."""
    ks = [ec.generate_private_key(ec.SECP256R1()) for _ in range(n)]
    cas = [ca_cert(ks[i], "Loop CA", ks[j], "Loop CA") for i in range(n) for j in range(n)]
    leaf_key = new_key("ec-p256")
    leaf = cert(leaf_key, "looper", ks[0], cas[0])
    return leaf_key, leaf, cas


def long_chain(n, root_key, root):
    """root -> CA n -> ... -> CA 1 -> leaf: n intermediates with distinct names (leaf first order)."""
    parent_key, parent_cn = root_key, root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    inters = []
    for i in range(n, 0, -1):
        k = ec.generate_private_key(ec.SECP256R1())
        inters.append(ca_cert(k, f"Level {i} CA", parent_key, parent_cn))
        parent_key, parent_cn = k, f"Level {i} CA"
    leaf_key = new_key("ec-p256")
    leaf = cert(leaf_key, "deep", parent_key, inters[-1])
    return leaf_key, leaf, list(reversed(inters))


def signed_image(directory, leaf_key, chain, name="hostile.sif"):
    """A copy of a real SIF signed by leaf_key whose signature carries `chain` as x5c (leaf first),
    whatever its length (sifguard's own signer would refuse nothing here)."""
    from sifguard.integrity.sign import Signer, sign_image
    p = os.path.join(str(directory), name)
    shutil.copyfile(ONE_GROUP, p)
    os.chmod(p, 0o644)
    sign_image(p, [Signer(leaf_key, tuple(chain))])
    return p


def raw_sign(key, message: bytes) -> bytes:
    """Sign with any key type, bypassing sifguard's key policy (the attacker's signer)."""
    from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, dsa.DSAPrivateKey):
        return key.sign(message, hashes.SHA256())
    return key.sign(message)


def raw_signed_image(directory, key, x5c, name="raw.sif", keyid=None):
    """A copy of a real SIF with one DSSE signature by `key` over group 1, carrying `x5c`
    (certificates or DER bytes, leaf first) — whatever the key type."""
    from cryptography.hazmat.primitives import serialization
    from sifguard.integrity import dsse
    from sifguard.integrity.metadata import DigestCache, image_metadata
    from sifguard.sif.format import DT_SIGNATURE, GROUP_MASK, signature_extra
    from sifguard.sif.image import NewObject, SifImage
    from sifguard.x509 import keys
    p = os.path.join(str(directory), name)
    shutil.copyfile(ONE_GROUP, p)
    os.chmod(p, 0o644)
    ders = tuple(c if isinstance(c, bytes) else c.public_bytes(serialization.Encoding.DER) for c in x5c)
    if keyid is None:
        try:
            keyid = keys.keyid(key.public_key())
        except keys.KeyPolicyError:
            keyid = ""
    with SifImage(p, writable=True) as img:
        payload = image_metadata(img, img.group_objects(1), DigestCache(img)).encode()
        pae = dsse.pae(dsse.PAYLOAD_TYPE, payload)
        env = dsse.Envelope(dsse.PAYLOAD_TYPE, payload, (dsse.EnvelopeSignature(keyid, raw_sign(key, pae), ders),))
        img.append(NewObject(DT_SIGNATURE, data=env.encode(), linked_id=1 | GROUP_MASK, extra=signature_extra(1)))
    return p


def _algo(issuer_key):
    return None if isinstance(issuer_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def any_cert(subject_key, subject, issuer_key, issuer, ca=False, sans=(), extensions=(), path_length=None):
    """A certificate with any names, SANs and extra (extension, critical) pairs; a CA gets
    keyCertSign, a leaf digitalSignature and codeSigning. Names may be CNs or x509.Names."""
    subject = name(subject) if isinstance(subject, str) else subject
    issuer = name(issuer) if isinstance(issuer, str) else issuer
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    return b.sign(issuer_key, _algo(issuer_key))
