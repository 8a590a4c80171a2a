"""The chart tier: `helm lint`, `helm template`, and an install into the local control plane.
Its tests arrive with the Helm chart."""
