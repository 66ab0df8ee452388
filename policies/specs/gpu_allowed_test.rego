package mlplat.specs.gpu_allowed_test

import data.mlplat.specs.gpu_allowed
import rego.v1

spec := {
	"tenant": {"name": "growth"},
	"limits": {"caps": {"cpu": 2, "memory_gib": 4, "gpu": 1}, "gpu_allowed": false},
	"requests": [{"what": "model 'm'", "file": "m.yaml", "resources": {"cpu": 1, "memory_gib": 2, "gpu": 1}}],
}

test_gpu_without_permission_is_refused if {
	gpu_allowed.violations(spec) == {{"file": "m.yaml", "msg": "model 'm' asks for 1 GPUs; tenant 'growth' is not allowed GPUs"}}
}

test_gpu_with_permission_passes if {
	allowed := json.patch(spec, [{"op": "replace", "path": "/limits/gpu_allowed", "value": true}])
	count(gpu_allowed.violations(allowed)) == 0
}

test_no_gpu_passes if {
	cpu_only := json.patch(spec, [{"op": "replace", "path": "/requests/0/resources/gpu", "value": 0}])
	count(gpu_allowed.violations(cpu_only)) == 0
}
