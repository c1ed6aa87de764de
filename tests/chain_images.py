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
