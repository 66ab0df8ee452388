# Every container requests and is limited to CPU and memory, so the scheduler, the namespace's
# ResourceQuota and the cost tool all see what it takes.
package k8s.pods.requests_limits

import data.lib.k8s
import rego.v1

# Gatekeeper and OPA read `violation`; the tests call `violations` (rules are functions of
# their input, so tests need no `with input`).
violation contains v if some v in violations(input)

violations(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	some kind in ["requests", "limits"]
	some resource in ["cpu", "memory"]
	not c.resources[kind][resource]
	msg := sprintf("container '%v' has no %v %v", [c.name, resource, kind])
}
