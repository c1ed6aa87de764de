"""The CA's Time-Stamping Authority: its policy, issuing its certificate into an existing CA
(`ca tsa-init`; `ca init` issues the first one itself) and loading it for `ca serve`.

Files: tsa.key (0600, encrypted with the CA passphrase when the CA uses one) and tsa.pem;
the certificate is recorded in the certificates table with profile `tsa`, so `ca revoke`,
the OCSP responder and the CRL cover it like any leaf of the intermediate. ca.json holds
`tsa_policy` (dotted OID) and `tsa_accuracy_seconds`.

The default policy is a UUID-derived OID, 2.25.<uuid4 as an integer> (ITU-T X.667: no
registered arc needed), drawn once per CA. A new TSA certificate (`--force`) keeps the policy
unless another is given, and leaves the old certificate recorded and valid: the tokens it
signed stay verifiable (revoke it explicitly with `ca revoke` after a key compromise).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
import uuid

from sifguard.ca import files, inputs, profiles
from sifguard.ca import store as castore
from sifguard.errors import BadInputError, KeyMaterialError

DEFAULT_ACCURACY = 1        # seconds


def new_policy_oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def policy_oid(value: str | None) -> str:
    """`--tsa-policy`: a dotted OID; None draws a new UUID-derived one."""
    from sifguard.tsp.authority import check_policy_oid
    if value is None:
        return new_policy_oid()
    try:
        return check_policy_oid(value)
    except ValueError as e:
        raise BadInputError(f"--tsa-policy: {e}") from None


def present(store: castore.CAStore) -> bool:
    return os.path.lexists(store.file(castore.TSA_PEM)) or os.path.lexists(store.file(castore.TSA_KEY))


def install(store: castore.CAStore, policy: str | None = None, days: int | None = None,
            force: bool = False) -> tuple:
    """Issue a TSA certificate and key into an existing CA. Returns (certificate, policy).
    Refuses when the CA has one, unless `force` (the old certificate stays recorded and valid).

    Order (crash-safe with the store's pending issuances): the row and a pending mark are
    committed first, then tsa.key, tsa.pem and ca.json are replaced, then the mark cleared;
    a killed run is settled by the next write command (`recover`: revoked when tsa.key does
    not hold the new key), and `ca serve` refuses a tsa.key that does not match tsa.pem."""
    if present(store) and not force:
        raise BadInputError(f"{store.path}: this CA has a TSA already ({castore.TSA_PEM}); "
                            "--force issues a new one (the old certificate stays valid)")
    policy = policy_oid(policy if policy is not None else store.config.get("tsa_policy"))
    inter = store.intermediate
    now = castore.utcnow()
    if days is None:
        days = profiles.TSA_DAYS                      # cut at the intermediate's notAfter
    else:
        days = inputs.days(days)
        if now + dt.timedelta(days=days) > inter.not_valid_after_utc:
            raise BadInputError(f"--days {days} would outlive the issuing CA "
                                f"(valid until {inter.not_valid_after_utc:%Y-%m-%d})")
    if now + dt.timedelta(hours=1) > inter.not_valid_after_utc:
        raise BadInputError("the issuing CA expires within the hour: renew it before issuing a TSA")
    ikey = store.key(castore.INT_KEY)
    key = profiles.generate_key(profiles.tsa_key_type(store.config.get("key_type", "ec-p256")))
    passphrase = store.passphrase if store.config.get("encrypted") else None   # set: INT_KEY opened with it
    key_pem, cert_path, key_path = castore.key_bytes(key, passphrase), store.file(castore.TSA_PEM), \
        store.file(castore.TSA_KEY)
    for _ in range(8):
        cert = profiles.tsa_cert(key, inter, ikey, store.config["name"], store.urls, now, days)
        serial = castore.serial_hex(cert.serial_number)
        try:
            with store.db:
                castore._insert_row(store.db, cert, castore.TSA_PROFILE, now)
                store.db.execute("INSERT INTO pending_issuance VALUES (?,?,?,?,?,?)",
                                 (serial, cert_path, key_path, socket.gethostname(), os.getpid(), int(now.timestamp())))
            break
        except sqlite3.IntegrityError:
            continue     # serial collision (2^-159): draw again
    else:
        raise BadInputError("could not allocate a unique serial")
    files.replace(key_path, key_pem, 0o600)
    files.replace(cert_path, castore.pem(cert), 0o644)
    config = dict(store.config, tsa_policy=policy,
                  tsa_accuracy_seconds=store.config.get("tsa_accuracy_seconds", DEFAULT_ACCURACY))
    files.replace(store.file(castore.CONFIG), json.dumps(config, indent=2).encode(), 0o600)
    store.config = config
    store._certs.pop(castore.TSA_PEM, None)
    store.issued_files_written(serial)
    return cert, policy


def load(store: castore.CAStore):
    """The CA's Authority (sifguard.tsp.authority) with its key: BadInputError when the CA
    has no TSA, KeyMaterialError when the key cannot be opened or does not match tsa.pem."""
    from cryptography import x509
    from sifguard.tsp.authority import Authority
    if not present(store):
        raise BadInputError(f"{store.path}: no time-stamping authority (run 'sifguard ca tsa-init')")
    try:
        with open(store.file(castore.TSA_PEM), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as e:
        raise KeyMaterialError(f"{store.file(castore.TSA_PEM)}: unreadable TSA certificate "
                               f"({getattr(e, 'strerror', None) or e})") from None
    key = store.key(castore.TSA_KEY)
    try:
        return Authority(cert, key, (cert, store.intermediate), store.config.get("tsa_policy"),
                         store.config.get("tsa_accuracy_seconds", DEFAULT_ACCURACY))
    except ValueError as e:
        raise BadInputError(f"{store.file(castore.CONFIG)}: {e}") from None
