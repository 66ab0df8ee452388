"""Tenants: their YAML vocabulary, the catalog of their files, and what every asset carries."""
