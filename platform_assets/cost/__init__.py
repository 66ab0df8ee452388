"""FinOps: measuring what each step spends, pricing it, and rolling it up per tenant."""
