# What a tenant's YAML requests per step (the tenant default and each model's `resources`)
# stays within the caps the platform sets for it (platform_assets/limits/limits.yaml).
package mlplat.specs.resources_within_caps

import rego.v1

violation contains v if some v in violations(input)

fields := {"cpu": "vCPU", "memory_gib": "GiB of memory", "gpu": "GPUs"}

violations(inp) := {{"msg": msg, "file": req.file} |
	some req in inp.requests
	some field
	unit := fields[field]
	asked := object.get(req.resources, field, 0)
	most := inp.limits.caps[field]
	asked > most
	msg := sprintf("%v asks for %v %v per step; tenant '%v' may have at most %v", [req.what, asked, unit, inp.tenant.name, most])
}
