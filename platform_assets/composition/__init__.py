"""The composition root: builds each code location from the capabilities' definitions, with the
deployment's resources, executors and step placement. Only the entry points import it."""
