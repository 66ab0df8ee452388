"""Deterministic demo data for the demo tenants."""
