package mlplat.specs.descriptions_test

import data.mlplat.specs.descriptions
import rego.v1

spec := {"objects": [{"kind": "model", "name": "m", "file": "m.yaml", "description": "Churn."}]}

test_described_passes if {
	count(descriptions.violations(spec)) == 0
}

test_blank_description_is_refused if {
	blank := json.patch(spec, [{"op": "replace", "path": "/objects/0/description", "value": "  "}])
	descriptions.violations(blank) == {{"file": "m.yaml", "msg": "model 'm' has no description"}}
}
