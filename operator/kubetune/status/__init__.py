"""Pure functions from the observed children to a resource's status."""
