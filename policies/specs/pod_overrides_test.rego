package mlplat.specs.pod_overrides_test

import data.mlplat.specs.pod_overrides
import rego.v1

spec := {"file": "t.yaml", "tenant": {"name": "growth", "k8s": {
	"pod_spec_config": {"node_selector": {"pool": "batch"}},
	"container_config": {"env": [{"name": "X", "value": "1"}]},
}}}

test_harmless_overrides_pass if {
	count(pod_overrides.violations(spec)) == 0
}

test_privileged_is_refused if {
	bad := json.patch(spec, [{"op": "add", "path": "/tenant/k8s/container_config/security_context", "value": {"privileged": true}}])
	pod_overrides.violations(bad) == {{"file": "t.yaml", "msg": "k8s.container_config.security_context.privileged: true is not allowed"}}
}

test_host_network_is_refused if {
	bad := json.patch(spec, [{"op": "add", "path": "/tenant/k8s/pod_spec_config/host_network", "value": true}])
	pod_overrides.violations(bad) == {{"file": "t.yaml", "msg": "k8s.pod_spec_config.host_network asks for host networking"}}
}

test_host_path_is_refused if {
	bad := json.patch(spec, [{"op": "add", "path": "/tenant/k8s/pod_spec_config/volumes", "value": [{"name": "docker", "host_path": {"path": "/var/run/docker.sock"}}]}])
	pod_overrides.violations(bad) == {{"file": "t.yaml", "msg": "k8s.pod_spec_config.volumes: volume 'docker' asks for a host path"}}
}

test_another_service_account_is_refused if {
	bad := json.patch(spec, [{"op": "add", "path": "/tenant/k8s/pod_spec_config/serviceAccountName", "value": "payments-runner"}])
	count(pod_overrides.violations(bad)) == 1
}

test_root_user_is_refused if {
	bad := json.patch(spec, [{"op": "add", "path": "/tenant/k8s/pod_spec_config/security_context", "value": {"run_as_user": 0}}])
	pod_overrides.violations(bad) == {{"file": "t.yaml", "msg": "k8s.pod_spec_config.security_context.run_as_user: 0 is not allowed"}}
}
