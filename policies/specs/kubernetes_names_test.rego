package mlplat.specs.kubernetes_names_test

import data.mlplat.specs.kubernetes_names
import rego.v1

spec := {
	"file": "t.yaml",
	"tenant": {"name": "fraud_ops", "k8s_name": "fraud-ops", "namespace": "tenant-fraud-ops"},
	"platform": {"reserved_namespaces": ["default", "kube-system", "mlplat"]},
	"other_tenants_namespaces": {"growth": "tenant-growth"},
}

test_valid_names_pass if {
	count(kubernetes_names.violations(spec)) == 0
}

test_trailing_underscore_is_refused if {
	bad := json.patch(spec, [{"op": "replace", "path": "/tenant/k8s_name", "value": "fraud-"}])
	count(kubernetes_names.violations(bad)) == 1
}

test_namespace_with_underscore_is_refused if {
	bad := json.patch(spec, [{"op": "replace", "path": "/tenant/namespace", "value": "tenant_fraud"}])
	kubernetes_names.violations(bad) == {{"file": "t.yaml", "msg": "namespace 'tenant_fraud' is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"}}
}

test_platform_namespace_is_refused if {
	bad := json.patch(spec, [{"op": "replace", "path": "/tenant/namespace", "value": "kube-system"}])
	kubernetes_names.violations(bad) == {{"file": "t.yaml", "msg": "namespace 'kube-system' belongs to the cluster or the platform, not to a tenant"}}
}

test_another_tenants_namespace_is_refused if {
	bad := json.patch(spec, [{"op": "replace", "path": "/tenant/namespace", "value": "tenant-growth"}])
	kubernetes_names.violations(bad) == {{"file": "t.yaml", "msg": "namespace 'tenant-growth' is already tenant 'growth''s: each tenant has its own"}}
}
