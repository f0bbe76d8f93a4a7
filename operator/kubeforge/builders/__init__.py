"""Pure functions from a validated spec to the desired child objects (plain dicts)."""
