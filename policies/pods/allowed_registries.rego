# Images come only from the platform's registries (`parameters.registries`, prefixes).
package k8s.pods.allowed_registries

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := {{"msg": msg} |
	registries := object.get(inp, ["parameters", "registries"], [])
	some c in k8s.containers(inp.review.object)
	# An InferenceService's model container may name no image: KServe runs the image of the
	# ServingRuntime the platform installs (a Pod's container always names one).
	image := c.image
	not allowed(image, registries)
	msg := sprintf("container '%v' uses image '%v', not from %v", [c.name, image, registries])
}

allowed(image, registries) if {
	some prefix in registries
	startswith(image, prefix)
}
