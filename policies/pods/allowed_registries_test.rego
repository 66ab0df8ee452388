package k8s.pods.allowed_registries_test

import data.k8s.pods.allowed_registries
import rego.v1

pod := {"parameters": {"registries": ["registry.mlplat.example/"]}, "review": {"object": {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "registry.mlplat.example/mlplat:1"}]}}}}

test_platform_registry_passes if {
	count(allowed_registries.violations(pod)) == 0
}

test_other_registry_is_refused if {
	evil := json.patch(pod, [{"op": "replace", "path": "/review/object/spec/containers/0/image", "value": "docker.io/evil:latest"}])
	allowed_registries.violations(evil) == {{"msg": "container 'c' uses image 'docker.io/evil:latest', not from [\"registry.mlplat.example/\"]"}}
}
