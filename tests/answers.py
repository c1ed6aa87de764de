"""Revocation answers for the pure decision core's tests: the real `Status` the revocation
client returns, built with the facts a test needs (no network)."""
from sifguard.ocsp.client import Status


def answer(status, source="ocsp", reason="", subject="", revoked_at=None, revocation_reason=None,
           invalidity_date=None) -> Status:
    return Status(status, source, reason, subject, "", None, revoked_at, revocation_reason, invalidity_date)
