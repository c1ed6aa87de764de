"""Key material: loading PEM keys and certificates, keyids, the one key policy, and the
raw sign/verify primitives used by DSSE (RSA PKCS#1 v1.5, ECDSA P-256/P-384/P-521, Ed25519).

The key policy (RSA >= 2048 bits, ECDSA on P-256/P-384/P-521, Ed25519) is one function,
`key_problem`, applied to keys given with `sign --key`/`verify --key`, to CSRs, and by
path building to every certificate key except a trust anchor's (the site's choice).
A key outside it is a refusal (KeyPolicyError, exit 1), never an internal error."""

from __future__ import annotations

import base64
import hashlib
import os
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sifguard.errors import KeyMaterialError, RefusedError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_HASHES = {1: hashes.SHA256, 2: hashes.SHA384, 3: hashes.SHA512}
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_SIG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512, hashes.SHA3_256, hashes.SHA3_384, hashes.SHA3_512)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError as e:
        raise KeyMaterialError(f"{path}: cannot read {what}: {e.strerror}") from None


def read_passphrase(file: str | None = None, env: str | None = None) -> bytes | None:
    """A passphrase from a file (first line) or an environment variable — never from argv."""
    if file:
        data = _read(file, "passphrase file")
        return data.splitlines()[0] if data.strip() else b""
    if env:
        if env not in os.environ:
            raise KeyMaterialError(f"environment variable {env} (passphrase) is not set")
        return os.environ[env].encode()
    return None


class KeyPolicyError(RefusedError):
    """A key is outside the key policy, or cannot be used the way sifguard needs (exit 1)."""


def key_problem(key) -> str | None:
    """Why `key` is outside the key policy, or None when it is allowed."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < 2048:
            return f"RSA key of {key.key_size} bits is too small (2048 minimum)"
        return None
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if not isinstance(key.curve, _CURVES):
            return f"ECDSA curve {key.curve.name} is not allowed (P-256, P-384 or P-521)"
        return None
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return None
    kind = type(key).__name__.removeprefix("_").replace("PublicKey", "").replace("PrivateKey", "")
    return f"{kind or 'unknown'} keys are not allowed (RSA >= 2048, ECDSA P-256/P-384/P-521, Ed25519)"


def check_key(key, what: str):
    """`key` when the key policy allows it; KeyPolicyError naming `what` otherwise."""
    problem = key_problem(key)
    if problem:
        raise KeyPolicyError(f"{what}: {problem}")
    return key


_check_supported = check_key      # the name sifguard.cli.ca_cmds uses


def certificate_problem(cert: x509.Certificate) -> str | None:
    """Why `cert` cannot be examined, or None. cryptography parses names, extensions and
    the key lazily and raises on first access; touching them once here means later code
    (path building, identity, reports) never meets a ValueError from a hostile certificate."""
    try:
        cert.version, cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
        cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()  # noqa: B018
        for e in cert.extensions:
            e.value  # noqa: B018
        cert.public_key()
    except x509.InvalidVersion:
        return "unsupported certificate version"
    except UnsupportedAlgorithm as e:
        return f"unsupported public key algorithm ({e})"
    except (ValueError, TypeError) as e:
        return f"malformed certificate ({e})"
    except Exception as e:   # noqa: BLE001 — hostile bytes inside a third-party parser: refuse, never crash
        return f"malformed certificate ({type(e).__name__})"
    return None


def signature_problem(cert: x509.Certificate) -> str | None:
    """Why the signature algorithm on `cert` is not acceptable (MD5, SHA-1, unknown), or None."""
    try:
        h = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return f"unsupported signature algorithm {cert.signature_algorithm_oid.dotted_string}"
    if h is None:
        if cert.signature_algorithm_oid in (x509.SignatureAlgorithmOID.ED25519, x509.SignatureAlgorithmOID.ED448):
            return None
        return f"unsupported signature algorithm {cert.signature_algorithm_oid.dotted_string}"
    if not isinstance(h, _SIG_HASHES):
        return f"signature algorithm with {h.name.upper()} is not allowed (SHA-256 or stronger)"
    return None


def load_private_key(path: str, passphrase: bytes | None = None) -> PrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as e:
        if "encrypted" in str(e) and passphrase is None:
            raise KeyMaterialError(
                f"{path}: key is encrypted; give --passphrase-file or --passphrase-env") from None
        raise KeyMaterialError(f"{path}: {e}") from None
    except ValueError:
        msg = "wrong passphrase or corrupt key" if passphrase is not None else "not a PEM private key"
        raise KeyMaterialError(f"{path}: {msg}") from None
    except UnsupportedAlgorithm as e:
        raise KeyMaterialError(f"{path}: unsupported key algorithm ({e})") from None
    return check_key(key, path)


def load_public_key(path: str) -> PublicKey:
    """A PEM public key, or the key of a PEM certificate."""
    data = _read(path, "public key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        elif b"PRIVATE KEY-----" in data:
            raise KeyMaterialError(f"{path}: is a private key; verify takes the public key")
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion):
        raise KeyMaterialError(f"{path}: not a PEM public key or certificate") from None
    return check_key(key, path)


def load_certificates(path: str, what: str = "certificates") -> list[x509.Certificate]:
    """Every certificate of a PEM (or single DER) file, each fully parsed (certificate_problem)."""
    data = _read(path, what)
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm):
            raise KeyMaterialError(f"{path}: holds no PEM certificate") from None
    else:
        try:
            certs = [x509.load_pem_x509_certificate(b) for b in blocks]
        except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as e:
            raise KeyMaterialError(f"{path}: malformed certificate ({e})") from None
    for i, c in enumerate(certs):
        problem = certificate_problem(c)
        if problem:
            raise KeyMaterialError(f"{path}: certificate {i + 1}: {problem}")
    return certs


def public_bytes(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def keyid(key: PublicKey) -> str:
    """OpenSSH SHA256 fingerprint of the key, as the Go DSSE signer writes in `keyid`.
    KeyPolicyError (a refusal) for a key outside the key policy — which includes every
    key OpenSSH cannot encode (DSA, Ed448, secp256k1, brainpool…)."""
    problem = key_problem(key)
    if problem:
        raise KeyPolicyError(f"no keyid for a key outside the key policy: {problem}")
    try:
        ssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyPolicyError(f"no OpenSSH keyid for this key ({key_problem(key) or e})") from None
    wire = base64.b64decode(ssh.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")


def algorithm(key: PublicKey | PrivateKey) -> str:
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return f"rsa-{key.key_size}-pkcs1v15-sha256"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return f"ecdsa-{key.curve.name}-sha256"
    return "ed25519"


def sign(key: PrivateKey, message: bytes) -> bytes:
    """Sign as the Go DSSE signer with crypto.SHA256 does (keys inside the key policy)."""
    check_key(key, "signing key")
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    return key.sign(message)


def verify(key: PublicKey, signature: bytes, message: bytes, hashtype: int = 1) -> bool:
    """True when `signature` over `message` verifies; ECDSA accepts DER or raw r||s."""
    h = _HASHES.get(hashtype, hashes.SHA256)
    if key_problem(key):
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), h())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            n = (key.curve.key_size + 7) // 8
            if len(signature) == 2 * n and signature[0] != 0x30:
                signature = encode_dss_signature(int.from_bytes(signature[:n], "big"),
                                                  int.from_bytes(signature[n:], "big"))
            key.verify(signature, message, ec.ECDSA(h()))
        else:
            key.verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False
