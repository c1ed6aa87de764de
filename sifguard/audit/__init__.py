"""Reading the decision log back: `sifguard audit report` (reader → pure report → table/JSON)."""
