"""A team's own training code (`trainer:` in a model YAML), run where the machine enforces the
boundary: a bubblewrap sandbox on one machine, a pod of the tenant's trainer image on
Kubernetes. Both talk to Dagster through Pipes; neither shares a process with the platform.
See docs/trainers.md."""
