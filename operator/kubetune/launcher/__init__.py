"""The entrypoint that runs inside trainer pods."""
