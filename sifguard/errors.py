"""Typed errors, one family per layer. Only the CLI maps them to exit codes."""


class SifguardError(Exception):
    """Base of every error sifguard raises on purpose."""

    exit_code = 2


class BadInputError(SifguardError):
    """The input cannot be used at all: unreadable, malformed, wrong usage (exit 2)."""

    exit_code = 2


class SifFormatError(BadInputError):
    """The bytes are not a well-formed SIF v01 image."""


class KeyMaterialError(BadInputError):
    """A key, certificate or passphrase could not be loaded."""


class RefusedError(SifguardError):
    """The input was understood and is refused by verification or policy (exit 1)."""

    exit_code = 1


class SignatureError(RefusedError):
    """A signature is missing, invalid, or made by an untrusted signer."""


class SlurmError(SifguardError):
    """Slurm could not be asked (scontrol failed or timed out); hooks then fail closed."""
