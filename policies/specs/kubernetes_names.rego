# A tenant's Kubernetes names are valid and its own: its name (with `_` as `-`) and namespace
# are DNS-1123 labels (its accounts, `<name>-runner` and `<name>-serving`, follow from the name),
# and its namespace is neither the cluster's, the platform's nor another tenant's.
package mlplat.specs.kubernetes_names

import rego.v1

violation contains v if some v in violations(input)

label_re := `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`

label(value) if {
	count(value) <= 63
	regex.match(label_re, value)
}

violations(inp) := name(inp) | namespace(inp) | taken(inp)

name(inp) := {{"msg": msg, "file": inp.file} |
	not label(inp.tenant.k8s_name)
	msg := sprintf("tenant name '%v' gives Kubernetes name '%v', which is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)", [inp.tenant.name, inp.tenant.k8s_name])
}

namespace(inp) := {{"msg": msg, "file": inp.file} |
	not label(inp.tenant.namespace)
	msg := sprintf("namespace '%v' is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)", [inp.tenant.namespace])
}

taken(inp) := reserved(inp) | shared(inp)

reserved(inp) := {{"msg": msg, "file": inp.file} |
	inp.tenant.namespace in inp.platform.reserved_namespaces
	msg := sprintf("namespace '%v' belongs to the cluster or the platform, not to a tenant", [inp.tenant.namespace])
}

shared(inp) := {{"msg": msg, "file": inp.file} |
	some other
	ns := inp.other_tenants_namespaces[other]
	ns == inp.tenant.namespace
	msg := sprintf("namespace '%v' is already tenant '%v''s: each tenant has its own", [ns, other])
}
