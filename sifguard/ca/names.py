"""Names the CA's CLI offers, kept free of heavy imports (the CLI parser loads this)."""

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-3072", "ed25519")
# RFC 5280 §5.3.1 CRLReason names, in code order; removeFromCRL (8) is left out: it belongs
# only in delta CRLs, which this CA does not issue
REASON_NAMES = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
                "cessationOfOperation", "certificateHold", "privilegeWithdrawn", "aACompromise")
