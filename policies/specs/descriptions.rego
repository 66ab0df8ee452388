# The tenant and every source, feature set and model it defines say what they are.
package mlplat.specs.descriptions

import rego.v1

violation contains v if some v in violations(input)

violations(inp) := {{"msg": msg, "file": item.file} |
	some item in inp.objects
	trim_space(object.get(item, "description", "")) == ""
	msg := sprintf("%v '%v' has no description", [item.kind, item.name])
}
