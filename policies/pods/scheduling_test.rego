package k8s.pods.scheduling_test

import data.k8s.pods.scheduling
import rego.v1

gpu := {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

params := {
	"default_tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}],
	"tenants": {
		"payments": {"tolerations": [gpu], "node_labels": {"mlplat/accelerator": ["nvidia-t4"]}, "priority_classes": ["mlplat-batch"]},
		"growth": {"tolerations": [], "node_labels": {}, "priority_classes": []},
	},
}

pod(tenant, spec) := {"parameters": params, "review": {"object": {"kind": "Pod", "metadata": {"labels": {"mlplat/tenant": tenant}}, "spec": object.union({"containers": [{"name": "c"}]}, spec)}}}

test_the_catalogs_placement_passes if {
	count(scheduling.violations(pod("payments", {"tolerations": [gpu], "nodeSelector": {"mlplat/accelerator": "nvidia-t4"}, "priorityClassName": "mlplat-batch"}))) == 0
}

test_an_unplaced_pod_passes if {
	count(scheduling.violations(pod("growth", {}))) == 0
}

test_priority_class_of_the_system_is_refused if {
	scheduling.violations(pod("payments", {"priorityClassName": "system-node-critical"})) == {{"msg": "pod uses priority class 'system-node-critical', not one the platform allows its tenant ([\"mlplat-batch\"])"}}
}

test_the_api_servers_default_toleration_passes if {
	count(scheduling.violations(pod("growth", {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}))) == 0
}

test_tolerating_every_taint_is_refused if {
	scheduling.violations(pod("payments", {"tolerations": [{"operator": "Exists"}]})) == {{"msg": "pod tolerates {\"operator\": \"Exists\"}, which is not a toleration the platform gives its tenant"}}
}

test_another_tenants_toleration_is_refused if {
	count(scheduling.violations(pod("growth", {"tolerations": [gpu]}))) == 1
}

test_control_plane_nodes_are_refused if {
	scheduling.violations(pod("growth", {"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}})) == {{"msg": "pod selects nodes by node-role.kubernetes.io/control-plane=, which is not a node pool the platform gives its tenant"}}
}
