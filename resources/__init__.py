"""Platform resources, one per external system, chosen per deployment in `resources.by_env`."""
