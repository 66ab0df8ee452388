"""Execution: deployment choice, executors and resources per deployment."""
