package mlplat.specs.owners_test

import data.mlplat.specs.owners
import rego.v1

spec := {"file": "t.yaml", "tenant": {"name": "growth", "owners": ["team:growth", "gina@growth.example"]}}

test_team_and_email_pass if {
	count(owners.violations(spec)) == 0
}

test_no_owners_is_refused if {
	nobody := json.patch(spec, [{"op": "replace", "path": "/tenant/owners", "value": []}])
	owners.violations(nobody) == {{"file": "t.yaml", "msg": "tenant has no owners"}}
}

test_unreachable_owners_are_refused if {
	vague := json.patch(spec, [{"op": "replace", "path": "/tenant/owners", "value": ["somebody"]}])
	owners.violations(vague) == {{"file": "t.yaml", "msg": "tenant 'growth' has no owner that is a 'team:' or an e-mail address (owners: [\"somebody\"])"}}
}
