# Helpers the pod policies share: the pod spec and pod labels of any workload kind.
# Gatekeeper: ship this file as the ConstraintTemplates' `libs`.
package lib.k8s

import rego.v1

templated := {"Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}

pod_spec(obj) := obj.spec if obj.kind == "Pod"

pod_spec(obj) := obj.spec.template.spec if obj.kind in templated

pod_spec(obj) := obj.spec.jobTemplate.spec.template.spec if obj.kind == "CronJob"

pod_labels(obj) := object.get(obj, ["metadata", "labels"], {}) if obj.kind == "Pod"

pod_labels(obj) := object.get(obj, ["spec", "template", "metadata", "labels"], {}) if {
	obj.kind in templated
}

pod_labels(obj) := object.get(obj, ["spec", "jobTemplate", "spec", "template", "metadata", "labels"], {}) if {
	obj.kind == "CronJob"
}

containers(obj) := array.concat(
	object.get(pod_spec(obj), "containers", []),
	object.get(pod_spec(obj), "initContainers", []),
)

is_pod(obj) if pod_spec(obj)
