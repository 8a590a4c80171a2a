"""Pure functions from a resource's spec to the child manifests (plain dicts)."""
