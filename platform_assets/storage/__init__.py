"""Lake retention: the nightly prune of old snapshots and request-log days."""
