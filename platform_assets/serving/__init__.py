"""Serving: online features in the Feast online store, and `mlplat serve` scoring champions."""
