"""Governance: promotion of models under policy, approvals and the audit trail."""
