#!/usr/bin/env python3
"""Renders deploy/kubernetes as `kubectl kustomize` would (its resources, its ConfigMap
generator and its image) and checks what an operator must be able to rely on before applying
it: who may reach the registry and the admin port, rollouts that drop nothing, probes,
availability, the pod security level "restricted", and hot reload of the config.

usage: manifests.py RENDERED_OUT   (writes the rendered objects there, for schema validation)
Prints one line per check and `N passed, N failed`; exits 1 when any failed.
"""

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def render():
    """The objects `kubectl kustomize deploy/kubernetes` makes, plus the Ingress example."""
    kustomization = yaml.safe_load((ROOT / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization["resources"] + ["ingress.yaml"]:
        objects += [o for o in yaml.safe_load_all((ROOT / resource).read_text()) if o]
    for generator in kustomization.get("configMapGenerator", []):
        data = {name: (ROOT / name).read_text() for name in generator["files"]}
        name = generator["name"]
        assert generator.get("options", {}).get("disableNameSuffixHash"), name
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name}, "data": data})
    images = {i["name"]: f'{i["newName"]}:{i["newTag"]}' for i in kustomization["images"]}
    for o in objects:
        for c in pod_spec(o).get("containers", []):
            c["image"] = images.get(c["image"], c["image"])
    return objects


def pod_spec(o):
    return o.get("spec", {}).get("template", {}).get("spec", {}) if o["kind"] == "Deployment" else {}


def find(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert found, f"no {kind} {name}"
    return found[0]


def labels(o):
    return o["spec"]["template"]["metadata"]["labels"]


CHECKS = []


def check(function):
    CHECKS.append(function)
    return function


@check
def the_registry_is_reached_by_portcullis_pods_only(objects):
    policy = find(objects, "NetworkPolicy", "registry-from-portcullis-only")
    registry = find(objects, "Deployment", "registry")
    portcullis = find(objects, "Deployment", "portcullis")
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= labels(registry).items(), "selects the registry"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}, "pods of this namespace, nothing wider"
    assert source["podSelector"]["matchLabels"].items() <= labels(portcullis).items()
    assert rule["ports"] == [{"port": 5000, "protocol": "TCP"}]


@check
def the_admin_port_is_for_the_monitoring_namespace_and_clients_reach_5000(objects):
    policy = find(objects, "NetworkPolicy", "portcullis")
    portcullis = find(objects, "Deployment", "portcullis")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels(portcullis).items()
    rules = policy["spec"]["ingress"]
    open_ports = [p["port"] for r in rules if "from" not in r for p in r["ports"]]
    assert open_ports == [5000], open_ports
    [admin] = [r for r in rules if "from" in r]
    assert admin["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert admin["from"] == [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    service = find(objects, "Service", "portcullis")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"], "no admin port"


@check
def rollouts_wait_for_the_endpoints_then_drain(objects):
    spec = pod_spec(find(objects, "Deployment", "portcullis"))
    [container] = spec["containers"]
    wait = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    config = (ROOT / "portcullis.toml").read_text()
    drain = 30  # [server] drain_seconds' default; the config does not change it
    assert "drain_seconds" not in config
    assert wait >= 5 and spec["terminationGracePeriodSeconds"] >= wait + drain + 1, spec


@check
def probes_have_timeouts_and_readiness_does_not_hang_on_the_registry(objects):
    for name in ["portcullis", "registry"]:
        [container] = pod_spec(find(objects, "Deployment", name))["containers"]
        for probe in ["livenessProbe", "readinessProbe"]:
            assert container[probe]["timeoutSeconds"] >= 2, (name, probe)
    [container] = pod_spec(find(objects, "Deployment", "portcullis"))["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


@check
def a_disruption_leaves_a_replica_and_replicas_spread(objects):
    budget = find(objects, "PodDisruptionBudget", "portcullis")
    deployment = find(objects, "Deployment", "portcullis")
    assert budget["spec"]["minAvailable"] >= 1
    assert deployment["spec"]["replicas"] > budget["spec"]["minAvailable"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels(deployment).items()
    keys = {c["topologyKey"] for c in pod_spec(deployment)["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


@check
def the_registry_recreates_for_its_volume(objects):
    registry = find(objects, "Deployment", "registry")
    assert registry["spec"]["strategy"] == {"type": "Recreate"}
    claim = find(objects, "PersistentVolumeClaim", "registry-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


@check
def every_pod_meets_the_restricted_level(objects):
    for name in ["portcullis", "registry"]:
        spec = pod_spec(find(objects, "Deployment", name))
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            s = c["securityContext"]
            assert s["allowPrivilegeEscalation"] is False, name
            assert s["capabilities"] == {"drop": ["ALL"]}, name
            assert s["readOnlyRootFilesystem"] is True, name
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, name


@check
def no_service_links_no_api_token_pinned_images(objects):
    for name in ["portcullis", "registry"]:
        spec = pod_spec(find(objects, "Deployment", name))
        assert spec["enableServiceLinks"] is False, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            tag = c["image"].rsplit(":", 1)
            assert len(tag) == 2 and tag[1] not in ("latest", "2"), c["image"]


@check
def prometheus_finds_the_metrics(objects):
    template = find(objects, "Deployment", "portcullis")["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    ports = {p["name"]: p["containerPort"] for p in pod_spec(
        find(objects, "Deployment", "portcullis"))["containers"][0]["ports"]}
    assert ports["admin"] == 9090
    assert 'admin_listen = "0.0.0.0:9090"' in (ROOT / "portcullis.toml").read_text()


@check
def config_edits_reload_in_place(objects):
    config = find(objects, "ConfigMap", "portcullis-config")
    spec = pod_spec(find(objects, "Deployment", "portcullis"))
    [volume] = [v for v in spec["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    [container] = spec["containers"]
    for mount in container["volumeMounts"]:
        assert "subPath" not in mount, mount


@check
def the_ingress_streams_blobs_of_any_size(objects):
    ingress = find(objects, "Ingress", "portcullis")
    a = ingress["metadata"]["annotations"]
    assert a["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert a["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert a["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "portcullis", "port": {"name": "http"}}


def main():
    objects = render()
    pathlib.Path(sys.argv[1]).write_text(yaml.safe_dump_all(objects))
    failed = 0
    for function in CHECKS:
        try:
            function(objects)
            print(f"test {function.__name__} ... ok")
        except AssertionError as error:
            failed += 1
            print(f"test {function.__name__} ... FAILED: {error!r}")
    print(f"kubernetes: {len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
