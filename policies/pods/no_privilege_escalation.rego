# Every container says allowPrivilegeEscalation: false (missing means true to Kubernetes).
package k8s.pods.no_privilege_escalation

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	not c.securityContext.allowPrivilegeEscalation == false
	msg := sprintf("container '%v' does not set allowPrivilegeEscalation: false", [c.name])
}
