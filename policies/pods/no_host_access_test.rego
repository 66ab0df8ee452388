package k8s.pods.no_host_access_test

import data.k8s.pods.no_host_access
import rego.v1

pod(spec) := {"review": {"object": {"kind": "Pod", "spec": object.union({"containers": [{"name": "c"}]}, spec)}}}

test_plain_pod_passes if {
	count(no_host_access.violations(pod({"volumes": [{"name": "tmp", "emptyDir": {}}]}))) == 0
}

test_host_network_is_refused if {
	no_host_access.violations(pod({"hostNetwork": true})) == {{"msg": "pod sets hostNetwork"}}
}

test_host_path_is_refused if {
	no_host_access.violations(pod({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})) == {{"msg": "volume 'root' mounts a host path"}}
}

test_host_port_is_refused if {
	count(no_host_access.violations(pod({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]}]}))) == 1
}

test_predictor_host_network_is_refused if {
	isvc := {"review": {"object": {"kind": "InferenceService", "spec": {"predictor": {"hostNetwork": true, "model": {}}}}}}
	no_host_access.violations(isvc) == {{"msg": "pod sets hostNetwork"}}
}
