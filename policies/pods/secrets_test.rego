package k8s.pods.secrets_test

import data.k8s.pods.secrets
import rego.v1

params := {"tenants": {"ridehail": {"env_from": ["ridehail-services"], "secret_keys": {"dagster-postgresql-secret": ["postgresql-password"]}}}}

pg := {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "dagster-postgresql-secret", "key": "postgresql-password"}}}

pod(container, volumes) := {"parameters": params, "review": {"object": {"kind": "Pod", "metadata": {"labels": {"mlplat/tenant": "ridehail"}}, "spec": {"volumes": volumes, "containers": [object.union({"name": "c"}, container)]}}}}

test_own_services_and_the_storage_password_pass if {
	count(secrets.violations(pod({"envFrom": [{"secretRef": {"name": "ridehail-services"}}, {"configMapRef": {"name": "dagster-pipeline-env"}}], "env": [pg]}, []))) == 0
}

test_another_tenants_secret_is_refused if {
	secrets.violations(pod({"envFrom": [{"secretRef": {"name": "payments-services"}}]}, [])) == {{"msg": "container 'c' reads Secret 'payments-services' (envFrom), not one of its tenant's [\"ridehail-services\"]"}}
}

test_dagsters_secret_whole_is_refused if {
	count(secrets.violations(pod({"envFrom": [{"secretRef": {"name": "dagster-postgresql-secret"}}]}, []))) == 1
}

test_another_key_of_a_platform_secret_is_refused if {
	other := {"name": "X", "valueFrom": {"secretKeyRef": {"name": "dagster-postgresql-secret", "key": "admin-password"}}}
	secrets.violations(pod({"env": [other]}, [])) == {{"msg": "container 'c' reads key 'admin-password' of Secret 'dagster-postgresql-secret', which its tenant may not read"}}
}

test_own_secret_volume_passes if {
	count(secrets.violations(pod({}, [{"name": "s", "secret": {"secretName": "ridehail-services"}}]))) == 0
}

test_another_tenants_secret_volume_is_refused if {
	secrets.violations(pod({}, [{"name": "s", "secret": {"secretName": "payments-services"}}])) == {{"msg": "volume 's' mounts Secret 'payments-services', not one of its tenant's [\"ridehail-services\"]"}}
}

test_projected_secret_of_another_tenant_is_refused if {
	count(secrets.violations(pod({}, [{"name": "p", "projected": {"sources": [{"secret": {"name": "payments-services"}}]}}]))) == 1
}

trainer(container, volumes) := json.patch(pod(container, volumes), [{"op": "add", "path": "/review/object/metadata/labels/mlplat~1role", "value": "trainer"}])

test_a_trainer_reads_not_even_its_tenants_secrets if {
	secrets.violations(trainer({"envFrom": [{"secretRef": {"name": "ridehail-services"}}]}, [])) == {{"msg": "container 'c' reads Secret 'ridehail-services' (envFrom), not one of its tenant's []"}}
}

test_a_trainer_reads_no_secret_key if {
	count(secrets.violations(trainer({"env": [pg]}, []))) == 1
}

test_a_trainer_mounts_no_secret if {
	count(secrets.violations(trainer({}, [{"name": "s", "secret": {"secretName": "ridehail-services"}}]))) == 1
}
