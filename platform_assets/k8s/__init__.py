"""Kubernetes: Helm values for the Dagster chart, per-tenant resources, the step Jobs Dagster
submits, and the checks (schemas, Rego policies) every one of them passes."""
