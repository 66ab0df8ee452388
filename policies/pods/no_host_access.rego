# No host namespaces, host paths or host ports: a tenant's pod stays inside its sandbox.
package k8s.pods.no_host_access

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := namespaces(inp) | paths(inp) | ports(inp)

namespaces(inp) := {{"msg": sprintf("pod sets %v", [field])} |
	spec := k8s.pod_spec(inp.review.object)
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	spec[field] == true
}

paths(inp) := {{"msg": sprintf("volume '%v' mounts a host path", [volume.name])} |
	some volume in object.get(k8s.pod_spec(inp.review.object), "volumes", [])
	volume.hostPath
}

ports(inp) := {{"msg": sprintf("container '%v' binds host port %v", [c.name, port.hostPort])} |
	some c in k8s.containers(inp.review.object)
	some port in object.get(c, "ports", [])
	port.hostPort
}
