# Where a pod runs is the platform's: its priority class, tolerations and node selector come only
# from the catalog entries (limits.yaml) the platform allows its tenant
# (`parameters.tenants[<tenant>]`: priority_classes, tolerations, node_labels), plus the
# tolerations the API server adds to every pod (`parameters.default_tolerations`).
package k8s.pods.scheduling

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := priority_violations(inp) | toleration_violations(inp) | node_selector_violations(inp)

priority_violations(inp) := {{"msg": msg} |
	name := k8s.pod_spec(inp.review.object).priorityClassName
	allowed := object.get(k8s.tenant_parameters(inp), "priority_classes", [])
	not name in allowed
	msg := sprintf("pod uses priority class '%v', not one the platform allows its tenant (%v)", [name, allowed])
}

# The API server's defaults carry tolerationSeconds, which the catalog's tolerations never do.
api_server_toleration(inp, t) if {
	some d in object.get(inp, ["parameters", "default_tolerations"], [])
	object.remove(t, ["tolerationSeconds"]) == d
}

toleration_violations(inp) := {{"msg": msg} |
	some t in object.get(k8s.pod_spec(inp.review.object), "tolerations", [])
	not t in object.get(k8s.tenant_parameters(inp), "tolerations", [])
	not api_server_toleration(inp, t)
	msg := sprintf("pod tolerates %v, which is not a toleration the platform gives its tenant", [t])
}

node_selector_violations(inp) := {{"msg": msg} |
	selected := object.get(k8s.pod_spec(inp.review.object), "nodeSelector", {})
	some key
	value := selected[key]
	not value in object.get(k8s.tenant_parameters(inp), ["node_labels", key], [])
	msg := sprintf("pod selects nodes by %v=%v, which is not a node pool the platform gives its tenant", [key, value])
}
