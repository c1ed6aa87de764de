"""Names the CA's CLI offers, kept free of heavy imports (the CLI parser loads this)."""

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-3072", "ed25519")
REASON_NAMES = ("unspecified", "keyCompromise", "affiliationChanged", "superseded",
                "cessationOfOperation", "certificateHold")
