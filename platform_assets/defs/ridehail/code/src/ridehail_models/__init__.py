"""The ridehail team's models."""
