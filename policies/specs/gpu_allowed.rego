# Only tenants the platform allows GPUs may ask for them.
package mlplat.specs.gpu_allowed

import rego.v1

violation contains v if some v in violations(input)

violations(inp) := {{"msg": msg, "file": req.file} |
	not inp.limits.gpu_allowed == true
	some req in inp.requests
	object.get(req.resources, "gpu", 0) > 0
	msg := sprintf("%v asks for %v GPUs; tenant '%v' is not allowed GPUs", [req.what, req.resources.gpu, inp.tenant.name])
}
