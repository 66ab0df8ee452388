# Containers run as a non-root user: runAsNonRoot on the pod or the container, never UID 0.
package k8s.pods.non_root

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := maybe_root(inp) | uid_zero(inp)

non_root(spec, c) if c.securityContext.runAsNonRoot == true

non_root(spec, c) if {
	spec.securityContext.runAsNonRoot == true
	not c.securityContext.runAsNonRoot == false
}

maybe_root(inp) := {{"msg": sprintf("container '%v' may run as root (set runAsNonRoot: true)", [c.name])} |
	spec := k8s.pod_spec(inp.review.object)
	some c in k8s.containers(inp.review.object)
	not non_root(spec, c)
}

uid_zero(inp) := {{"msg": sprintf("container '%v' runs as UID 0", [c.name])} |
	spec := k8s.pod_spec(inp.review.object)
	some c in k8s.containers(inp.review.object)
	pod_uid := object.get(spec, ["securityContext", "runAsUser"], -1)
	object.get(c, ["securityContext", "runAsUser"], pod_uid) == 0
}
