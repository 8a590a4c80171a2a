"""The operator's runtime: the watches' caches, the keyed work queue, and the workers that drain it."""
