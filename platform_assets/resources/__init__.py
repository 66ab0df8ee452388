"""Platform resources, one per external system (lake, Feast, MLflow, prices), and the set each
deployment uses (`deployment.resources_for`)."""
