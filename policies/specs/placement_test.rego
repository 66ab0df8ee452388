package mlplat.specs.placement_test

import data.mlplat.specs.placement
import rego.v1

spec := {
	"tenant": {"name": "payments"},
	"limits": {"allowed_accelerators": ["nvidia_t4"], "allowed_node_pools": ["batch"]},
	"catalog": {"accelerators": ["nvidia_a100", "nvidia_t4"], "node_pools": ["batch", "system"]},
	"requests": [{"what": "model 'm'", "file": "m.yaml", "resources": {"cpu": 1, "gpu": 1, "accelerator": "nvidia_t4", "node_pool": "batch"}}],
}

test_allowed_accelerator_and_pool_pass if {
	count(placement.violations(spec)) == 0
}

test_no_placement_asked_passes if {
	plain := json.patch(spec, [{"op": "replace", "path": "/requests/0/resources", "value": {"cpu": 1, "gpu": 0, "accelerator": null, "node_pool": null}}])
	count(placement.violations(plain)) == 0
}

test_accelerator_not_in_catalog_is_refused if {
	bad := json.patch(spec, [{"op": "replace", "path": "/requests/0/resources/accelerator", "value": "tpu"}])
	placement.violations(bad) == {{"file": "m.yaml", "msg": "model 'm' asks for accelerator 'tpu', which the platform's catalog does not list (limits.yaml catalog.accelerators: [\"nvidia_a100\", \"nvidia_t4\"])"}}
}

test_accelerator_not_allowed_is_refused if {
	bad := json.patch(spec, [{"op": "replace", "path": "/requests/0/resources/accelerator", "value": "nvidia_a100"}])
	placement.violations(bad) == {{"file": "m.yaml", "msg": "model 'm' asks for accelerator 'nvidia_a100'; tenant 'payments' may use only [\"nvidia_t4\"] (limits.yaml allowed_accelerators)"}}
}

test_node_pool_not_allowed_is_refused if {
	bad := json.patch(spec, [{"op": "replace", "path": "/requests/0/resources/node_pool", "value": "system"}])
	placement.violations(bad) == {{"file": "m.yaml", "msg": "model 'm' asks for node_pool 'system'; tenant 'payments' may use only [\"batch\"] (limits.yaml allowed_node_pools)"}}
}

test_node_pool_not_in_catalog_is_refused if {
	bad := json.patch(spec, [{"op": "replace", "path": "/requests/0/resources/node_pool", "value": "control-plane"}])
	count(placement.violations(bad)) == 1
}
