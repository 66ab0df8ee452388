# Dagster's pods carry what a cluster cost tool attributes spend by: tenant, code location and
# run id on every pod, and the asset on every step pod.
package k8s.pods.cost_labels

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

always := {"mlplat/tenant", "mlplat/code-location", "dagster/run-id"}

required(labels) := always | {"mlplat/asset"} if {
	labels["app.kubernetes.io/component"] == "step_worker"
} else := always

violations(inp) := {{"msg": sprintf("pod has no cost-attribution label '%v'", [key])} |
	k8s.pod_spec(inp.review.object)
	labels := k8s.pod_labels(inp.review.object)
	some key in required(labels)
	not labels[key]
}
