"""The image tier: the built images (make images) run as containers, as a kubelet would run them.

It runs in a pytest session of its own (make test-images): the other tiers' session runs the operator on the
host, which would reconcile this tier's resources too.
"""
