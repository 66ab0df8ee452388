# Root filesystems are read-only (steps write to mounted volumes) except for the containers the
# platform lists in `parameters.writable_root_containers`, which cannot work without.
package k8s.pods.read_only_root_fs

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	not c.securityContext.readOnlyRootFilesystem == true
	not c.name in object.get(inp, ["parameters", "writable_root_containers"], [])
	msg := sprintf("container '%v' does not set readOnlyRootFilesystem: true", [c.name])
}
