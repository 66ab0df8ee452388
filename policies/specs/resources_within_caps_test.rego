package mlplat.specs.resources_within_caps_test

import data.mlplat.specs.resources_within_caps
import rego.v1

spec := {
	"tenant": {"name": "ridehail"},
	"limits": {"caps": {"cpu": 2, "memory_gib": 4, "gpu": 0}, "gpu_allowed": false},
	"requests": [{"what": "model 'm'", "file": "m.yaml", "resources": {"cpu": 2, "memory_gib": 4, "gpu": 0}}],
}

test_within_caps_passes if {
	count(resources_within_caps.violations(spec)) == 0
}

test_too_much_memory_is_refused if {
	big := json.patch(spec, [{"op": "replace", "path": "/requests/0/resources/memory_gib", "value": 64}])
	resources_within_caps.violations(big) == {{"file": "m.yaml", "msg": "model 'm' asks for 64 GiB of memory per step; tenant 'ridehail' may have at most 4"}}
}

test_too_many_cpus_is_refused if {
	big := json.patch(spec, [{"op": "replace", "path": "/requests/0/resources/cpu", "value": 8}])
	count(resources_within_caps.violations(big)) == 1
}
