"""The CA directory: keys (0600 in a 0700 directory), published certificates, and the
SQLite database of every issued certificate.

Each operation is one SQLite transaction (WAL, synchronous=FULL): `kill -9` at any
instant never loses an issued certificate or leaves half a row, and concurrent
`ca issue` processes serialise on the write lock. A certificate is written to the
caller's file only after its row is committed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import stat
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from sifguard.ca import profiles
from sifguard.errors import BadInputError, KeyMaterialError

DB = "ca.db"
CONFIG = "ca.json"
ROOT_KEY, INT_KEY, OCSP_KEY = "root.key", "intermediate.key", "ocsp-responder.key"
ROOT_PEM, INT_PEM, OCSP_PEM = "root.pem", "intermediate.pem", "ocsp-responder.pem"
CRL_PEM, CRL_DER, ROOT_CRL_DER = "crl.pem", "crl.der", "root-crl.der"

MIGRATIONS = [
    # 1: certificates and CRLs
    """
    CREATE TABLE certificates (
        serial      TEXT PRIMARY KEY,          -- upper-case hex, no leading zeros
        subject     TEXT NOT NULL,
        cn          TEXT NOT NULL,
        sans        TEXT NOT NULL DEFAULT '[]',-- JSON list of e-mail SANs
        profile     TEXT NOT NULL,             -- code-signing | ocsp-responder | intermediate
        not_before  INTEGER NOT NULL,          -- unix seconds
        not_after   INTEGER NOT NULL,
        status      TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
        revoked_at  INTEGER,
        reason      TEXT,
        issued_at   INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        pem         TEXT NOT NULL
    );
    CREATE INDEX certificates_status ON certificates(status);
    CREATE TABLE crls (
        issuer      TEXT NOT NULL,             -- intermediate | root
        number      INTEGER NOT NULL,
        this_update INTEGER NOT NULL,
        next_update INTEGER NOT NULL,
        der         BLOB NOT NULL,
        PRIMARY KEY (issuer, number)
    );
    """,
    # 2: pre-signed OCSP answers shared by every responder process (one ETag per answer)
    """
    CREATE TABLE ocsp_cache (
        serial      TEXT NOT NULL,
        alg         TEXT NOT NULL,
        signer      TEXT NOT NULL,             -- responder | issuer
        record      TEXT NOT NULL,             -- the status row the answer was signed for
        this_update INTEGER NOT NULL,
        next_update INTEGER NOT NULL,
        der         BLOB NOT NULL,
        PRIMARY KEY (serial, alg, signer)
    );
    """,
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _ts(d: dt.datetime) -> int:
    return int(d.timestamp())


def serial_hex(n: int) -> str:
    return f"{n:X}"


def parse_serial(s: str) -> str:
    t = s.strip().replace(":", "").upper()
    if t.startswith("0X"):
        t = t[2:]
    try:
        return serial_hex(int(t, 16))
    except ValueError:
        raise BadInputError(f"serial {s!r} is not hexadecimal") from None


def write_private(path: str, data: bytes) -> None:
    """Write a secret 0600, atomically (temp file + rename), never world-readable in between."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_public(path: str, data: bytes, mode: int = 0o644) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def key_bytes(key, passphrase: bytes | None) -> bytes:
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Row:
    serial: str
    subject: str
    cn: str
    sans: list
    profile: str
    not_before: int
    not_after: int
    status: str
    revoked_at: int | None
    reason: str | None
    issued_at: int
    fingerprint: str
    pem: str

    def effective_status(self, now: int) -> str:
        if self.status == "revoked":
            return "revoked"
        return "expired" if self.not_after < now else "valid"

    def as_dict(self, now: int) -> dict:
        iso = lambda t: t and dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        return {"serial": self.serial, "subject": self.subject, "cn": self.cn, "email": self.sans,
                "profile": self.profile, "status": self.effective_status(now),
                "not_before": iso(self.not_before), "not_after": iso(self.not_after),
                "revoked_at": iso(self.revoked_at), "reason": self.reason,
                "fingerprint": "sha256:" + self.fingerprint}


def _row(r) -> Row:
    return Row(r[0], r[1], r[2], json.loads(r[3]), *r[4:])


COLUMNS = ("serial, subject, cn, sans, profile, not_before, not_after, status, revoked_at, reason, "
           "issued_at, fingerprint, pem")


class CAStore:
    """An existing CA directory. Keys are loaded lazily, each with the passphrase."""

    def __init__(self, path: str, passphrase: bytes | None = None):
        self.path = path
        if not os.path.isdir(path) or not os.path.exists(os.path.join(path, DB)):
            raise BadInputError(f"{path}: not a sifguard CA directory (run 'sifguard ca init' first)")
        self.passphrase = passphrase
        try:
            with open(self.file(CONFIG)) as f:
                self.config = json.load(f)
        except (OSError, ValueError) as e:
            raise BadInputError(f"{path}: unreadable CA configuration: {e}") from None
        self.urls = profiles.SiteURLs.from_base(self.config["url"])
        self.db = connect(self.file(DB))
        self._pid = os.getpid()
        self._certs: dict[str, x509.Certificate] = {}

    def reconnect_after_fork(self) -> None:
        """A forked worker must not share its parent's SQLite connection."""
        if self._pid != os.getpid():
            self.db = connect(self.file(DB))
            self._pid = os.getpid()

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def cert(self, name: str) -> x509.Certificate:
        if name not in self._certs:
            with open(self.file(name), "rb") as f:
                self._certs[name] = x509.load_pem_x509_certificate(f.read())
        return self._certs[name]

    @property
    def root(self) -> x509.Certificate:
        return self.cert(ROOT_PEM)

    @property
    def intermediate(self) -> x509.Certificate:
        return self.cert(INT_PEM)

    @property
    def responder(self) -> x509.Certificate:
        return self.cert(OCSP_PEM)

    def key(self, name: str):
        path = self.file(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise KeyMaterialError(f"{path}: {e.strerror}") from None
        try:
            return serialization.load_pem_private_key(data, self.passphrase)
        except TypeError:
            raise KeyMaterialError(f"{path}: CA key is encrypted; give --passphrase-file or --passphrase-env") from None
        except ValueError:
            raise KeyMaterialError(f"{path}: wrong CA passphrase or corrupt key") from None

    # --- issuing -------------------------------------------------------------
    def issue(self, pub, cn: str, email: str | None, days: int, profile: str = "code-signing") -> x509.Certificate:
        ikey = self.key(INT_KEY)
        now = utcnow()
        for _ in range(8):
            serial = profiles.random_serial()
            cert = profiles.code_signing_cert(pub, cn, email, self.intermediate, ikey,
                                              self.config["name"], self.urls, serial, now, days)
            try:
                with self.db:
                    self._insert(cert, profile, now)
                return cert
            except sqlite3.IntegrityError:
                continue  # serial collision (2^-159): draw again
        raise BadInputError("could not allocate a unique serial")

    def _insert(self, cert: x509.Certificate, profile: str, now: dt.datetime) -> None:
        from sifguard.x509.chain import fingerprint
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = san.get_values_for_type(x509.RFC822Name)
        except x509.ExtensionNotFound:
            sans = []
        self.db.execute(
            f"INSERT INTO certificates ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (serial_hex(cert.serial_number), cert.subject.rfc4514_string(), cn, json.dumps(sans), profile,
             _ts(cert.not_valid_before_utc), _ts(cert.not_valid_after_utc), "valid", None, None,
             _ts(now), fingerprint(cert), pem(cert).decode()))

    # --- revocation ----------------------------------------------------------
    def revoke(self, serial: str, reason: str) -> Row:
        if reason not in profiles.REASONS:
            raise BadInputError(f"unknown reason {reason!r} (choose {', '.join(profiles.REASONS)})")
        with self.db:
            row = self.get(serial)
            if row is None:
                raise BadInputError(f"no certificate with serial {serial} in this CA")
            if row.status == "revoked":
                raise BadInputError(f"certificate {serial} is already revoked ({row.reason})")
            self.db.execute("UPDATE certificates SET status='revoked', revoked_at=?, reason=? WHERE serial=?",
                            (_ts(utcnow()), reason, serial))
        return self.get(serial)

    def get(self, serial: str) -> Row | None:
        r = self.db.execute(f"SELECT {COLUMNS} FROM certificates WHERE serial=?", (serial,)).fetchone()
        return _row(r) if r else None

    def status_of(self, serial: int, by_root: bool = False) -> tuple[str, int | None, str | None] | None:
        """(status, revoked_at, reason) for the responder: one indexed read. The root issued
        only intermediates, the intermediate everything else."""
        r = self.db.execute("SELECT status, revoked_at, reason FROM certificates WHERE serial=? AND "
                            f"(profile = 'intermediate') = {int(by_root)}", (serial_hex(serial),)).fetchone()
        return tuple(r) if r else None

    def status_and_cached(self, serial: int, alg: str, signer: str):
        """One indexed read: the certificate's status and any pre-signed answer for it."""
        r = self.db.execute(
            "SELECT c.status, c.revoked_at, c.reason, o.record, o.this_update, o.next_update, o.der "
            "FROM certificates c LEFT JOIN ocsp_cache o ON o.serial = c.serial AND o.alg = ? AND o.signer = ? "
            f"WHERE c.serial = ? AND (c.profile = 'intermediate') = {int(signer == 'root')}",
            (alg, signer, serial_hex(serial))).fetchone()
        if r is None:
            return None, None
        return tuple(r[:3]), (None if r[3] is None else (r[3], r[4], r[5], r[6]))

    def store_answer(self, serial: int, alg: str, signer: str, record: tuple, this_update: int,
                     next_update: int, der: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO ocsp_cache VALUES (?,?,?,?,?,?,?)",
                        (serial_hex(serial), alg, signer, json.dumps(record), this_update, next_update, der))

    def rows(self, status: str | None = None) -> list[Row]:
        now = _ts(utcnow())
        out = [_row(r) for r in self.db.execute(f"SELECT {COLUMNS} FROM certificates ORDER BY issued_at, serial")]
        return [r for r in out if status is None or r.effective_status(now) == status]

    def revoked(self, issuer: str = "intermediate") -> list[tuple[int, dt.datetime, str]]:
        """Revoked certificates issued by the intermediate, or (issuer='root') revoked intermediates."""
        op = "=" if issuer == "root" else "!="
        return [(int(s, 16), dt.datetime.fromtimestamp(t, dt.timezone.utc), reason) for s, t, reason in
                self.db.execute("SELECT serial, revoked_at, reason FROM certificates "
                                f"WHERE status='revoked' AND profile {op} 'intermediate'")]

    def revision(self) -> tuple:
        """Changes whenever a revocation lands (for caches in long-running services)."""
        return tuple(self.db.execute(
            "SELECT COUNT(*), COALESCE(MAX(revoked_at), 0) FROM certificates WHERE status='revoked'").fetchone())

    # --- CRL -----------------------------------------------------------------
    def make_crl(self, next_update: dt.timedelta | None = None, issuer: str = "intermediate") -> x509.CertificateRevocationList:
        next_update = next_update or dt.timedelta(hours=self.config.get("crl_hours", 24))
        if issuer == "root":
            cert, key = self.root, self.key(ROOT_KEY)
        else:
            cert, key = self.intermediate, self.key(INT_KEY)
        with self.db:
            # one BEGIN IMMEDIATE transaction: the number and the revoked list come from one snapshot
            revoked = self.revoked(issuer)
            number = self.db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM crls WHERE issuer=?",
                                     (issuer,)).fetchone()[0]
            now = utcnow()
            crl = profiles.build_crl(cert, key, revoked, number, now, next_update)
            self.db.execute("INSERT INTO crls VALUES (?,?,?,?,?)",
                            (issuer, number, _ts(now), _ts(now + next_update),
                             crl.public_bytes(serialization.Encoding.DER)))
        self.publish_crl(crl, issuer)
        return crl

    def latest_crl(self, issuer: str = "intermediate") -> tuple[int, int, bytes] | None:
        r = self.db.execute("SELECT number, next_update, der FROM crls WHERE issuer=? ORDER BY number DESC LIMIT 1",
                            (issuer,)).fetchone()
        return tuple(r) if r else None

    def publish_crl(self, crl, issuer: str = "intermediate") -> None:
        der = crl.public_bytes(serialization.Encoding.DER)
        if issuer == "root":
            write_public(self.file(ROOT_CRL_DER), der)
        else:
            write_public(self.file(CRL_DER), der)
            write_public(self.file(CRL_PEM), crl.public_bytes(serialization.Encoding.PEM))


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=30000")
    # isolation_level=None + `with db` would not open a transaction: wrap explicitly.
    return _TxConnection(db)


class _TxConnection:
    """sqlite3 connection whose `with` block is BEGIN IMMEDIATE … COMMIT/ROLLBACK."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db
        self._depth = 0
        migrate(db)

    def execute(self, *a):
        return self._db.execute(*a)

    def __enter__(self):
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        return self

    def __exit__(self, exc_type, *rest):
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False

    def close(self):
        self._db.close()


def migrate(db: sqlite3.Connection) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            (cur,) = db.execute("PRAGMA user_version").fetchone()
            if cur < i:
                for stmt in filter(str.strip, sql.split(";")):
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version={i}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def init(path: str, name: str, url: str, key_type: str = "ec-p256", passphrase: bytes | None = None,
         crl_hours: int = 24, ocsp_validity_hours: int = 4) -> CAStore:
    """Create a new CA directory. Refuses to touch an existing CA."""
    if os.path.exists(os.path.join(path, DB)):
        raise BadInputError(f"{path}: a CA already exists here")
    if not url.startswith(("http://", "https://")):
        raise BadInputError(f"--url must be an http(s) URL, not {url!r}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    now = utcnow()
    urls = profiles.SiteURLs.from_base(url)
    root_key, int_key = profiles.generate_key(key_type), profiles.generate_key(key_type)
    resp_key = profiles.generate_key(key_type)
    root = profiles.root_cert(root_key, name, now)
    inter = profiles.intermediate_cert(int_key, root, root_key, name, urls, now)
    resp = profiles.ocsp_responder_cert(resp_key, inter, int_key, name, now)
    for fname, key in ((ROOT_KEY, root_key), (INT_KEY, int_key), (OCSP_KEY, resp_key)):
        write_private(os.path.join(path, fname), key_bytes(key, passphrase))
    for fname, cert in ((ROOT_PEM, root), (INT_PEM, inter), (OCSP_PEM, resp)):
        write_public(os.path.join(path, fname), pem(cert))
    write_public(os.path.join(path, "chain.pem"), pem(inter) + pem(root))
    write_public(os.path.join(path, CONFIG), json.dumps({
        "name": name, "url": url, "key_type": key_type, "crl_hours": crl_hours,
        "ocsp_validity_hours": ocsp_validity_hours, "encrypted": bool(passphrase), "created": _ts(now),
    }, indent=2).encode(), 0o600)
    db = connect(os.path.join(path, DB))   # creates and migrates; the DB file is created last
    db.close()
    os.chmod(os.path.join(path, DB), stat.S_IRUSR | stat.S_IWUSR)
    store = CAStore(path, passphrase)
    with store.db:
        store._insert(inter, "intermediate", now)
        store._insert(resp, "ocsp-responder", now)
    store.make_crl()
    store.make_crl(issuer="root")
    return store
