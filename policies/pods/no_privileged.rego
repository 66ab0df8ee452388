# No privileged containers and no added Linux capabilities.
package k8s.pods.no_privileged

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := privileged(inp) | capabilities(inp)

privileged(inp) := {{"msg": sprintf("container '%v' is privileged", [c.name])} |
	some c in k8s.containers(inp.review.object)
	c.securityContext.privileged == true
}

capabilities(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	added := object.get(c, ["securityContext", "capabilities", "add"], [])
	count(added) > 0
	msg := sprintf("container '%v' adds capabilities %v", [c.name, added])
}
