# Where a tenant's steps run is the platform's: a request may name an accelerator class or a node
# pool only from the catalog in limits.yaml, and only one the platform allows that tenant
# (`allowed_accelerators`, `allowed_node_pools`). The step's node selector, tolerations and
# priority class come from that catalog entry, never from the tenant.
package mlplat.specs.placement

import rego.v1

violation contains v if some v in violations(input)

kinds := {"accelerator": ["accelerators", "allowed_accelerators"], "node_pool": ["node_pools", "allowed_node_pools"]}

violations(inp) := unknown(inp) | not_allowed(inp)

unknown(inp) := {{"msg": msg, "file": req.file} |
	some req in inp.requests
	some field
	names := kinds[field]
	asked := object.get(req.resources, field, null)
	asked != null
	not asked in inp.catalog[names[0]]
	msg := sprintf("%v asks for %v '%v', which the platform's catalog does not list (limits.yaml catalog.%v: %v)", [req.what, field, asked, names[0], inp.catalog[names[0]]])
}

not_allowed(inp) := {{"msg": msg, "file": req.file} |
	some req in inp.requests
	some field
	names := kinds[field]
	asked := object.get(req.resources, field, null)
	asked in inp.catalog[names[0]]
	allowed := object.get(inp.limits, names[1], [])
	not asked in allowed
	msg := sprintf("%v asks for %v '%v'; tenant '%v' may use only %v (limits.yaml %v)", [req.what, field, asked, inp.tenant.name, allowed, names[1]])
}
