"""Fixtures of the diagnose scenarios (a local DNS zone, a Pomona that asks it, a world of objects)."""

from diag_helpers import client, p, w, zone  # noqa: F401
