"""The CA directory: keys (0600 in a 0700 directory), published certificates, and the
SQLite database of every issued certificate.

Each operation is one SQLite transaction (WAL, synchronous=FULL): `kill -9` at any
instant never loses an issued certificate or leaves half a row, and concurrent
`ca issue` processes serialise on the write lock. A certificate is written to the
caller's file only after its row is committed, together with a `pending_issuance` row;
the certificate file is written first, the generated key last (as a whole new file), and
the pending row is cleared after both. The next write command settles what a killed
issuance left: complete when the key file holds the certificate's key, otherwise the
certificate (whose key nobody holds) is revoked. CRL numbers are taken and the CRL files
replaced under one flock (`publish.lock`), and a CRL never replaces a higher-numbered one:
the published crl.der only moves forward.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
import stat
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from sifguard.ca import files, inputs, profiles
from sifguard.errors import BadInputError, KeyMaterialError

DB = "ca.db"
CONFIG = "ca.json"
ROOT_KEY, INT_KEY, OCSP_KEY = "root.key", "intermediate.key", "ocsp-responder.key"
ROOT_PEM, INT_PEM, OCSP_PEM = "root.pem", "intermediate.pem", "ocsp-responder.pem"
CRL_PEM, CRL_DER, ROOT_CRL_DER = "crl.pem", "crl.der", "root-crl.der"
CHAIN_PEM = "chain.pem"
TSA_KEY, TSA_PEM = "tsa.key", "tsa.pem"   # the Time-Stamping Authority (sifguard/ca/tsa.py)
TSA_PROFILE = "tsa"                         # its profile in the certificates table (issued by the intermediate)
PUBLISH_LOCK = "publish.lock"      # flock: CRL numbers are taken and published in one critical section
# what `init` writes: a directory holding only these (an interrupted init) may be initialised
INIT_FILES = frozenset({DB, CONFIG, ROOT_KEY, INT_KEY, OCSP_KEY, ROOT_PEM, INT_PEM, OCSP_PEM, CRL_PEM, CRL_DER,
                        ROOT_CRL_DER, CHAIN_PEM, PUBLISH_LOCK, DB + "-wal", DB + "-shm", DB + "-journal",
                        TSA_KEY, TSA_PEM})

MIGRATIONS = [
    # 1: certificates and CRLs
    """
    CREATE TABLE certificates (
        serial      TEXT PRIMARY KEY,          -- upper-case hex, no leading zeros
        subject     TEXT NOT NULL,
        cn          TEXT NOT NULL,
        sans        TEXT NOT NULL DEFAULT '[]',-- JSON list of e-mail SANs
        profile     TEXT NOT NULL,             -- code-signing | ocsp-responder | intermediate | tsa
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
    # 3: issuances whose files are not written yet (a crash leaves the row; the next run settles it)
    """
    CREATE TABLE pending_issuance (
        serial      TEXT PRIMARY KEY,
        out         TEXT,                      -- certificate file asked for
        out_key     TEXT,                      -- generated key file asked for (NULL with a CSR)
        host        TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        started     INTEGER NOT NULL
    );
    """,
    # 4: RFC 5280 invalidityDate of a revocation (unix seconds; NULL when not known)
    """
    ALTER TABLE certificates ADD COLUMN invalidity_date INTEGER;
    """,
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _ts(d: dt.datetime) -> int:
    return int(d.timestamp())


def serial_hex(n: int) -> str:
    return f"{n:X}"


def parse_serial(s: str) -> str:
    """Hex (optionally colon-separated or 0x-prefixed) to the stored form; BadInputError otherwise."""
    return inputs.serial(s)


def write_private(path: str, data: bytes) -> None:
    """Write a secret 0600 from its first byte, atomically (never partial under `path`)."""
    files.replace(path, data, 0o600)


def write_public(path: str, data: bytes, mode: int = 0o644) -> None:
    files.replace(path, data, mode)


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
    invalidity_date: int | None = None    # when the key was (suspected) compromised / it became invalid

    def effective_status(self, now: int) -> str:
        if self.status == "revoked":
            return "revoked"
        return "expired" if self.not_after < now else "valid"

    def as_dict(self, now: int) -> dict:
        iso = lambda t: None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime(  # noqa: E731
            "%Y-%m-%dT%H:%M:%SZ")
        return {"serial": self.serial, "subject": self.subject, "cn": self.cn, "email": self.sans,
                "profile": self.profile, "status": self.effective_status(now),
                "not_before": iso(self.not_before), "not_after": iso(self.not_after),
                "revoked_at": iso(self.revoked_at), "reason": self.reason,
                "invalidity_date": iso(self.invalidity_date),
                "fingerprint": "sha256:" + self.fingerprint}


def _row(r) -> Row:
    return Row(r[0], r[1], r[2], json.loads(r[3]), *r[4:])


COLUMNS = ("serial, subject, cn, sans, profile, not_before, not_after, status, revoked_at, reason, "
           "issued_at, fingerprint, pem, invalidity_date")


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
        if not isinstance(self.config, dict) or not isinstance(self.config.get("url"), str) \
                or not isinstance(self.config.get("name"), str):
            raise BadInputError(f"{path}: CA configuration {CONFIG} lacks 'name' or 'url'")
        self.urls = profiles.SiteURLs.from_base(self.config["url"])
        self.db = connect(self.file(DB))
        self._pid = os.getpid()
        self._certs: dict[str, x509.Certificate] = {}
        files.sweep(path)      # temporaries of CA processes killed mid-write

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
    def issue(self, pub, cn: str, email: str | None, days: int, profile: str = "code-signing",
              out: str | None = None, out_key: str | None = None) -> x509.Certificate:
        """Sign and record a certificate. With `out`/`out_key`, the row is recorded as a pending
        issuance in the same transaction; `issued_files_written` clears it once both files exist,
        and `recover` settles it if this process dies first."""
        cn = inputs.common_name(cn)
        email = inputs.email(email) if email is not None else None
        days = inputs.days(days)
        ikey = self.key(INT_KEY)
        now = utcnow()
        for _ in range(8):
            serial = profiles.random_serial()
            cert = profiles.code_signing_cert(pub, cn, email, self.intermediate, ikey,
                                              self.config["name"], self.urls, serial, now, days)
            try:
                with self.db:
                    self._insert(cert, profile, now)
                    if out or out_key:
                        self.db.execute("INSERT INTO pending_issuance VALUES (?,?,?,?,?,?)",
                                        (serial_hex(serial), out, out_key, socket.gethostname(), os.getpid(),
                                         _ts(now)))
                return cert
            except sqlite3.IntegrityError:
                continue  # serial collision (2^-159): draw again
        raise BadInputError("could not allocate a unique serial")

    def issued_files_written(self, serial: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM pending_issuance WHERE serial=?", (serial,))

    def abandon_issuance(self, serial: str) -> str:
        """The key of this issuance never reached its file: nobody holds it, so the certificate
        is revoked (cessationOfOperation) and its file removed if it is exactly ours."""
        with self.db:
            row = self.db.execute("SELECT out FROM pending_issuance WHERE serial=?", (serial,)).fetchone()
            cur = self.get(serial)
            if cur is not None and cur.status == "valid":
                self.db.execute("UPDATE certificates SET status='revoked', revoked_at=?, reason=? WHERE serial=?",
                                (_ts(utcnow()), "cessationOfOperation", serial))
            self.db.execute("DELETE FROM pending_issuance WHERE serial=?", (serial,))
        out = row[0] if row else None
        if out and cur is not None:
            try:
                with open(out, "rb") as f:
                    ours = f.read().startswith(cur.pem.encode())
                if ours:
                    os.unlink(out)
            except OSError:
                pass
        return f"serial {serial} ({cur.cn if cur else '?'}): its key was never written; certificate revoked"

    def recover(self) -> list[str]:
        """Settle issuances left pending by processes of this host that no longer run: complete
        when the key file holds the certificate's key, otherwise revoke (see abandon_issuance).
        Returns one line per settled issuance. Also sweeps their temporaries."""
        host = socket.gethostname()
        notes = []
        for serial, out, out_key, h, pid in self.db.execute(
                "SELECT serial, out, out_key, host, pid FROM pending_issuance").fetchall():
            if h != host or files.process_alive(pid):
                continue
            for target in (out, out_key):
                if target:
                    files.sweep(os.path.dirname(target) or ".", os.path.basename(target))
            row = self.get(serial)
            if row is None:
                self.issued_files_written(serial)
                continue
            if out_key is None or _key_matches(out_key, row):
                self.issued_files_written(serial)
                if out and not _file_starts_with(out, row.pem.encode()):
                    notes.append(f"serial {serial} ({row.cn}) was issued but {out} was not written: "
                                 "see 'sifguard ca list'")
                continue
            notes.append(self.abandon_issuance(serial))
        return notes

    def _insert(self, cert: x509.Certificate, profile: str, now: dt.datetime) -> None:
        _insert_row(self.db, cert, profile, now)

    # --- revocation ----------------------------------------------------------
    def revoke(self, serial: str, reason: str, invalidity_date: dt.datetime | None = None) -> Row:
        """Revoke now. `invalidity_date` (RFC 5280 §5.3.2): when the key was or is suspected
        to have been compromised, or the certificate otherwise became invalid; not after now."""
        if reason not in profiles.REASONS:
            raise BadInputError(f"unknown reason {reason!r} (choose {', '.join(profiles.REASONS)})")
        with self.db:
            row = self.get(serial)
            if row is None:
                raise BadInputError(f"no certificate with serial {serial} in this CA")
            if row.status == "revoked":
                raise BadInputError(f"certificate {serial} is already revoked ({row.reason})")
            now = utcnow()
            invalid = None
            if invalidity_date is not None:
                invalid = _ts(inputs.invalidity_date(invalidity_date, now))
            self.db.execute("UPDATE certificates SET status='revoked', revoked_at=?, reason=?, invalidity_date=? "
                            "WHERE serial=?", (_ts(now), reason, invalid, serial))
        return self.get(serial)

    def get(self, serial: str) -> Row | None:
        r = self.db.execute(f"SELECT {COLUMNS} FROM certificates WHERE serial=?", (serial,)).fetchone()
        return _row(r) if r else None

    def status_of(self, serial: int, by_root: bool = False
                  ) -> tuple[str, int | None, str | None, int | None] | None:
        """(status, revoked_at, reason, invalidity_date) for the responder: one indexed read.
        The root issued only intermediates, the intermediate everything else."""
        r = self.db.execute("SELECT status, revoked_at, reason, invalidity_date FROM certificates WHERE serial=? AND "
                            f"(profile = 'intermediate') = {int(by_root)}", (serial_hex(serial),)).fetchone()
        return tuple(r) if r else None

    def status_and_cached(self, serial: int, alg: str, signer: str):
        """One indexed read: the certificate's status and any pre-signed answer for it."""
        r = self.db.execute(
            "SELECT c.status, c.revoked_at, c.reason, c.invalidity_date, o.record, o.this_update, o.next_update, o.der "
            "FROM certificates c LEFT JOIN ocsp_cache o ON o.serial = c.serial AND o.alg = ? AND o.signer = ? "
            f"WHERE c.serial = ? AND (c.profile = 'intermediate') = {int(signer == 'root')}",
            (alg, signer, serial_hex(serial))).fetchone()
        if r is None:
            return None, None
        return tuple(r[:4]), (None if r[4] is None else tuple(r[4:8]))

    def store_answer(self, serial: int, alg: str, signer: str, record: tuple, this_update: int,
                     next_update: int, der: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO ocsp_cache VALUES (?,?,?,?,?,?,?)",
                        (serial_hex(serial), alg, signer, json.dumps(record), this_update, next_update, der))

    def rows(self, status: str | None = None) -> list[Row]:
        now = _ts(utcnow())
        out = [_row(r) for r in self.db.execute(f"SELECT {COLUMNS} FROM certificates ORDER BY issued_at, serial")]
        return [r for r in out if status is None or r.effective_status(now) == status]

    def revoked(self, issuer: str = "intermediate") -> list[tuple[int, dt.datetime, str, dt.datetime | None]]:
        """Revoked certificates issued by the intermediate, or (issuer='root') revoked intermediates:
        (serial, revoked at, reason, invalidity date), expired or not (they are never dropped)."""
        op = "=" if issuer == "root" else "!="
        utc = lambda t: None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc)  # noqa: E731
        return [(int(s, 16), utc(t), reason, utc(inv)) for s, t, reason, inv in
                self.db.execute("SELECT serial, revoked_at, reason, invalidity_date FROM certificates "
                                f"WHERE status='revoked' AND profile {op} 'intermediate'")]

    @property
    def created(self) -> dt.datetime:
        """When this CA was created: it keeps every revocation since then, of expired
        certificates too (CRL ExpiredCertsOnCRL, OCSP archiveCutoff)."""
        t = self.config.get("created")
        if isinstance(t, int) and not isinstance(t, bool):
            return dt.datetime.fromtimestamp(t, dt.timezone.utc)
        return self.root.not_valid_before_utc    # older ca.json: nothing was issued before the root

    def revision(self) -> tuple:
        """Changes whenever a revocation lands (for caches in long-running services)."""
        return tuple(self.db.execute(
            "SELECT COUNT(*), COALESCE(MAX(revoked_at), 0) FROM certificates WHERE status='revoked'").fetchone())

    # --- CRL -----------------------------------------------------------------
    def make_crl(self, next_update: dt.timedelta | None = None, issuer: str = "intermediate") -> x509.CertificateRevocationList:
        """Issue the next CRL and publish it. The number is taken and the files are replaced under
        one flock, so the published CRL numbers only ever increase, whoever publishes."""
        next_update = next_update or dt.timedelta(hours=self.config.get("crl_hours", 24))
        if issuer == "root":
            cert, key = self.root, self.key(ROOT_KEY)
        else:
            cert, key = self.intermediate, self.key(INT_KEY)
        with self._publishing():
            with self.db:
                # one BEGIN IMMEDIATE transaction: the number and the revoked list come from one snapshot
                revoked = self.revoked(issuer)
                number = self.db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM crls WHERE issuer=?",
                                         (issuer,)).fetchone()[0]
                now = utcnow()
                crl = profiles.build_crl(cert, key, revoked, number, now, next_update, self.created)
                self.db.execute("INSERT INTO crls VALUES (?,?,?,?,?)",
                                (issuer, number, _ts(now), _ts(now + next_update),
                                 crl.public_bytes(serialization.Encoding.DER)))
            self._publish_if_newer(crl, issuer)
        return crl

    def latest_crl(self, issuer: str = "intermediate") -> tuple[int, int, bytes] | None:
        r = self.db.execute("SELECT number, next_update, der FROM crls WHERE issuer=? ORDER BY number DESC LIMIT 1",
                            (issuer,)).fetchone()
        return tuple(r) if r else None

    def publish_crl(self, crl, issuer: str = "intermediate") -> None:
        """Publish `crl` unless the published file already has a number at least as high."""
        with self._publishing():
            self._publish_if_newer(crl, issuer)

    def _publishing(self):
        # a read-only CA directory cannot hold the lock: the number check still keeps files monotonic
        return files.locked(self.file(PUBLISH_LOCK), optional=True)

    def _publish_if_newer(self, crl, issuer: str) -> None:
        der_path = self.file(ROOT_CRL_DER if issuer == "root" else CRL_DER)
        number = _crl_number(crl)
        published = _published_crl_number(der_path)
        if published is not None and published >= number:
            return
        der = crl.public_bytes(serialization.Encoding.DER)
        if issuer == "root":
            write_public(der_path, der)
        else:
            write_public(self.file(CRL_PEM), crl.public_bytes(serialization.Encoding.PEM))
            write_public(der_path, der)     # last: crl.der is what the number check reads


def _insert_row(db, cert: x509.Certificate, profile: str, now: dt.datetime) -> None:
    from sifguard.x509.chain import fingerprint
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        sans = []
    db.execute(
        f"INSERT INTO certificates ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (serial_hex(cert.serial_number), cert.subject.rfc4514_string(), cn, json.dumps(sans), profile,
         _ts(cert.not_valid_before_utc), _ts(cert.not_valid_after_utc), "valid", None, None,
         _ts(now), fingerprint(cert), pem(cert).decode(), None))


def _crl_number(crl) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _published_crl_number(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return _crl_number(x509.load_der_x509_crl(f.read()))
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None


def _file_starts_with(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(data)) == data
    except OSError:
        return False


def _key_matches(path: str, row: Row) -> bool:
    """Does the key file hold the private key of this certificate? (Encrypted keys are
    trusted by their presence: we cannot open them, and only this issuance wrote there.)"""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError:
        return False
    if b"ENCRYPTED" in data:
        return True
    try:
        key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError):
        return False
    cert = x509.load_pem_x509_certificate(row.pem.encode())
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    return (key.public_key().public_bytes(serialization.Encoding.DER, pub)
            == cert.public_key().public_bytes(serialization.Encoding.DER, pub))


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
         crl_hours: int = 24, ocsp_validity_hours: int = 4, tsa_policy: str | None = None) -> CAStore:
    """Create a new CA directory (with its Time-Stamping Authority: `tsa_policy`, a dotted
    OID, or a new 2.25.<uuid> one). Refuses to touch an existing CA or a directory holding
    anything but the files of an interrupted `init`."""
    from sifguard.ca import tsa
    name = inputs.site_name(name)
    tsa_policy = tsa.policy_oid(tsa_policy)
    url = inputs.base_url(url)
    crl_hours = inputs.whole_number(crl_hours, "--crl-hours", 1, inputs.MAX_CRL_HOURS)
    ocsp_validity_hours = inputs.whole_number(ocsp_validity_hours, "--ocsp-validity-hours", 1, inputs.MAX_OCSP_HOURS)
    if key_type not in profiles.KEY_TYPES:
        raise BadInputError(f"unknown key type {key_type!r} (choose {', '.join(profiles.KEY_TYPES)})")
    if os.path.exists(os.path.join(path, DB)):
        raise BadInputError(f"{path}: a CA already exists here")
    if os.path.lexists(path):
        if os.path.islink(path) or not os.path.isdir(path):
            raise BadInputError(f"{path}: exists and is not a directory")
        try:
            foreign = [n for n in os.listdir(path) if n not in INIT_FILES and files.TMP_MARK not in n]
        except OSError as e:
            raise BadInputError(f"{path}: {e.strerror}") from None
        if foreign:
            raise BadInputError(f"{path}: not empty ({foreign[0]} …): give a new directory for the CA")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as e:
        raise BadInputError(f"{path}: cannot create the CA directory: {e.strerror}") from None
    files.sweep(path)
    now = utcnow()
    urls = profiles.SiteURLs.from_base(url)
    root_key, int_key = profiles.generate_key(key_type), profiles.generate_key(key_type)
    resp_key = profiles.generate_key(key_type)
    root = profiles.root_cert(root_key, name, now)
    inter = profiles.intermediate_cert(int_key, root, root_key, name, urls, now)
    resp = profiles.ocsp_responder_cert(resp_key, inter, int_key, name, now)
    tsa_key = profiles.generate_key(profiles.tsa_key_type(key_type))
    tsa_cert = profiles.tsa_cert(tsa_key, inter, int_key, name, urls, now)
    for fname, key in ((ROOT_KEY, root_key), (INT_KEY, int_key), (OCSP_KEY, resp_key), (TSA_KEY, tsa_key)):
        write_private(os.path.join(path, fname), key_bytes(key, passphrase))
    for fname, cert in ((ROOT_PEM, root), (INT_PEM, inter), (OCSP_PEM, resp), (TSA_PEM, tsa_cert)):
        write_public(os.path.join(path, fname), pem(cert))
    write_public(os.path.join(path, CHAIN_PEM), pem(inter) + pem(root))
    write_public(os.path.join(path, CONFIG), json.dumps({
        "name": name, "url": url, "key_type": key_type, "crl_hours": crl_hours,
        "ocsp_validity_hours": ocsp_validity_hours, "encrypted": bool(passphrase), "created": _ts(now),
        "tsa_policy": tsa_policy, "tsa_accuracy_seconds": tsa.DEFAULT_ACCURACY,
    }, indent=2).encode(), 0o600)
    # The database is created last and complete (certificates and CRL numbers inside) under a
    # temporary name: a CA directory whose ca.db exists is always a whole CA.
    tmp_db = os.path.join(path, f".{DB}{files.TMP_MARK}{os.getpid()}.{os.urandom(4).hex()}")
    db = connect(tmp_db)
    os.chmod(tmp_db, stat.S_IRUSR | stat.S_IWUSR)
    with db:
        for cert, profile in ((inter, "intermediate"), (resp, "ocsp-responder"), (tsa_cert, TSA_PROFILE)):
            _insert_row(db, cert, profile, now)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db._db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    os.replace(tmp_db, os.path.join(path, DB))
    files.fsync_dir(path)
    store = CAStore(path, passphrase)
    store.make_crl()
    store.make_crl(issuer="root")
    return store
