# Helpers the pod policies share: the pod spec, containers and pod labels of any workload kind.
# Gatekeeper: ship this file as the ConstraintTemplates' `libs`.
package lib.k8s

import rego.v1

templated := {"Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}

# KServe's InferenceService: its predictor is a PodSpec extension, and KServe runs the predictor's
# `model` as the container `kserve-container` beside the predictor's own containers. Only the
# predictor is judged: transformers and explainers (which mlplat does not render) are not.
model_container := "kserve-container"

pod_spec(obj) := obj.spec if obj.kind == "Pod"

pod_spec(obj) := obj.spec.template.spec if obj.kind in templated

pod_spec(obj) := obj.spec.jobTemplate.spec.template.spec if obj.kind == "CronJob"

pod_spec(obj) := obj.spec.predictor if obj.kind == "InferenceService"

pod_labels(obj) := object.get(obj, ["metadata", "labels"], {}) if obj.kind == "Pod"

pod_labels(obj) := object.get(obj, ["spec", "template", "metadata", "labels"], {}) if {
	obj.kind in templated
}

pod_labels(obj) := object.get(obj, ["spec", "jobTemplate", "spec", "template", "metadata", "labels"], {}) if {
	obj.kind == "CronJob"
}

# KServe labels the predictor's pods with the InferenceService's labels, overridden by
# `spec.predictor.labels` (the predictor component wins).
pod_labels(obj) := object.union(
	object.get(obj, ["metadata", "labels"], {}),
	object.get(obj, ["spec", "predictor", "labels"], {}),
) if {
	obj.kind == "InferenceService"
}

containers(obj) := array.concat(
	array.concat(
		object.get(pod_spec(obj), "containers", []),
		object.get(pod_spec(obj), "initContainers", []),
	),
	model(obj),
)

model(obj) := [object.union(obj.spec.predictor.model, {"name": model_container})] if {
	obj.kind == "InferenceService"
} else := []

is_pod(obj) if pod_spec(obj)

# A pod that serves a model rather than runs a Dagster step: an InferenceService, or a pod
# KServe created for one (it labels them with the InferenceService's name).
is_serving(obj) if obj.kind == "InferenceService"

is_serving(obj) if pod_labels(obj)["serving.kserve.io/inferenceservice"]

# Dagster's run worker: the one pod that talks to the Kubernetes API (it creates its steps'
# Jobs), so the only one that mounts a service-account token.
is_run_worker(obj) if pod_labels(obj)["app.kubernetes.io/component"] == "run_worker"

# A team's trainer pod (models/trainers/pod.py): the tenant's own training code in its trainer
# image, as its trainer account (bound to no role), with no Secret, no token and no env but the
# Dagster Pipes bootstrap.
is_trainer(obj) if pod_labels(obj)["mlplat/role"] == "trainer"

# A model step that launches a trainer pod (PipesK8sClient creates, watches and deletes it), so
# it talks to the Kubernetes API too.
launches_trainer(obj) if {
	pod_labels(obj)["app.kubernetes.io/component"] == "step_worker"
	pod_labels(obj)["mlplat/launches"] == "trainer"
}

pod_tenant(obj) := pod_labels(obj)["mlplat/tenant"]

# What the platform allows the pod's tenant (`parameters.tenants[<tenant>]`), or {}.
tenant_parameters(inp) := object.get(inp, ["parameters", "tenants", tenant], {}) if {
	tenant := pod_tenant(inp.review.object)
} else := {}

# The annotations the pod gets (AppArmor and seccomp once lived there).
pod_annotations(obj) := object.get(obj, ["metadata", "annotations"], {}) if obj.kind == "Pod"

pod_annotations(obj) := object.get(obj, ["spec", "template", "metadata", "annotations"], {}) if {
	obj.kind in templated
}

pod_annotations(obj) := object.get(obj, ["spec", "jobTemplate", "spec", "template", "metadata", "annotations"], {}) if {
	obj.kind == "CronJob"
}

pod_annotations(obj) := object.union(
	object.get(obj, ["metadata", "annotations"], {}),
	object.get(obj, ["spec", "predictor", "annotations"], {}),
) if {
	obj.kind == "InferenceService"
}
