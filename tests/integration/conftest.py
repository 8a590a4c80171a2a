"""The integration tier: the operator against the local control plane. Its fixtures (`operator`, `claim`)
live in tests/operator_fixtures.py, shared with the serve tier: one operator process per test session."""
