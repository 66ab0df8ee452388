"""Data-quality checks: Great Expectations suites from team YAML and platform leakage checks."""
