"""Feature store capability: Feast repos, offline store and feature assets."""
