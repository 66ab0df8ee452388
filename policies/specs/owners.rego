# Every tenant names owners Dagster and CODEOWNERS can reach: a `team:` or an e-mail address.
package mlplat.specs.owners

import rego.v1

violation contains v if some v in violations(input)

reachable(owner) if startswith(owner, "team:")

reachable(owner) if contains(owner, "@")

violations(inp) := missing(inp) | unreachable(inp)

missing(inp) := {{"msg": "tenant has no owners", "file": inp.file} |
	count(object.get(inp.tenant, "owners", [])) == 0
}

unreachable(inp) := {{"msg": msg, "file": inp.file} |
	owners := object.get(inp.tenant, "owners", [])
	count(owners) > 0
	count([o | some o in owners; reachable(o)]) == 0
	msg := sprintf("tenant '%v' has no owner that is a 'team:' or an e-mail address (owners: %v)", [inp.tenant.name, owners])
}
