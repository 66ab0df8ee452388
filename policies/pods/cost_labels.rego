# Pods carry what a cluster cost tool attributes spend by. Dagster's pods: tenant, code location
# and run id on every pod, and the asset on every step and trainer pod. Serving pods (KServe's,
# for a champion) are no Dagster run: tenant, code location and the model they serve.
package k8s.pods.cost_labels

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

always := {"mlplat/tenant", "mlplat/code-location", "dagster/run-id"}

serving := {"mlplat/tenant", "mlplat/code-location", "mlplat/model"}

required(obj, labels) := serving if {
	k8s.is_serving(obj)
} else := always | {"mlplat/asset"} if {
	labels["app.kubernetes.io/component"] == "step_worker"
} else := always | {"mlplat/asset"} if {
	k8s.is_trainer(obj)
} else := always

violations(inp) := {{"msg": sprintf("pod has no cost-attribution label '%v'", [key])} |
	obj := inp.review.object
	k8s.pod_spec(obj)
	labels := k8s.pod_labels(obj)
	some key in required(obj, labels)
	missing(labels, key)
}

# An empty value attributes the spend to nobody.
missing(labels, key) if not labels[key]

missing(labels, key) if labels[key] == ""
