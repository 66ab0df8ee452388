"""The platform's health: the Prometheus exporter, tenants' SLOs, and generated rules/dashboard."""
