"""Sensors: promotion of evaluated models, and later budget and quality signals."""
