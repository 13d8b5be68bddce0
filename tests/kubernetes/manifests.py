#!/usr/bin/env python3
"""Renders deploy/kubernetes and the overlay a user edits (deploy/kubernetes-overlay) as
`kubectl kustomize` would, and checks on both what an operator must be able to rely on
before applying them: who may reach the registry and the admin port, rollouts that drop
nothing, probes, availability, the pod security level "restricted", hot reload of the
config, the Ingress, and that the overlay's values arrive.

usage: manifests.py RENDERED_OUT   (writes the rendered objects there, for schema validation)
Prints one line per check and `N passed, N failed`; exits 1 when any failed.
"""

import pathlib
import sys

import yaml

BASE = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAY = BASE.parent / "kubernetes-overlay"


def render(directory):
    """The objects `kubectl kustomize DIRECTORY` makes, for what our kustomizations use:
    resources (files, and directories holding a kustomization), ConfigMap generators
    (create, replace), replicas, JSON 6902 patches and images."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            # As kustomize: a base may not hold the kustomization that uses it.
            assert not directory.resolve().is_relative_to(path), f"{path} holds {directory}"
            objects += render(path)
        else:
            objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    for generator in kustomization.get("configMapGenerator", []):
        name = generator["name"]
        assert generator.get("options", {}).get("disableNameSuffixHash"), name
        made = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                "data": {f: (directory / f).read_text() for f in generator["files"]}}
        existing = [o for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"] == name]
        if generator.get("behavior", "create") == "replace":
            assert existing, f"nothing to replace: {name}"
            objects = [o for o in objects if not any(o is e for e in existing)]
        else:
            assert not existing, f"two ConfigMaps {name}"
        objects.append(made)
    for replicas in kustomization.get("replicas", []):
        find(objects, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    for patch in kustomization.get("patches", []):
        target = find(objects, patch["target"]["kind"], patch["target"]["name"])
        for op in yaml.safe_load(patch["patch"]):
            apply(target, op)
    images = {i["name"]: f'{i["newName"]}:{i["newTag"]}'
              for i in kustomization.get("images", [])}
    for o in objects:
        for c in pod_spec(o).get("containers", []):
            c["image"] = images.get(c["image"], c["image"])
    return objects


def apply(document, op):
    """One JSON 6902 `add` or `replace`."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~")
                      for p in op["path"].split("/")[1:]]
    node = document
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key = int(last) if isinstance(node, list) else last
    assert op["op"] in ("add", "replace"), op
    if op["op"] == "replace":
        assert key in node if isinstance(node, dict) else key < len(node), op
    node[key] = op["value"]


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
    config = find(objects, "ConfigMap", "portcullis-config")["data"]["portcullis.toml"]
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
    config = find(objects, "ConfigMap", "portcullis-config")["data"]["portcullis.toml"]
    assert 'admin_listen = "0.0.0.0:9090"' in config


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
    if not any(o["kind"] == "Ingress" for o in objects):
        return  # the base has none: the overlay brings it
    ingress = find(objects, "Ingress", "portcullis")
    a = ingress["metadata"]["annotations"]
    assert a["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert a["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert a["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "portcullis", "port": {"name": "http"}}


@check
def the_overlay_carries_a_users_values(objects):
    if not any(o["kind"] == "Ingress" for o in objects):
        return  # the base: nothing of a user's yet
    deployment = find(objects, "Deployment", "portcullis")
    assert deployment["spec"]["replicas"] == 3
    [container] = pod_spec(deployment)["containers"]
    assert container["image"] == "registry.example.com/portcullis:0.1.0"
    config = find(objects, "ConfigMap", "portcullis-config")["data"]["portcullis.toml"]
    host = find(objects, "Ingress", "portcullis")["spec"]["rules"][0]["host"]
    assert f'\npublic_url = "https://{host}"' in config, "the realm names the Ingress' host"
    policy = find(objects, "NetworkPolicy", "portcullis")
    assert policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]


def kubectl_agrees(directory, objects):
    """Where kubectl is installed (it is not on a fresh machine): its own kustomize renders
    the same objects, with the same images, replicas and config."""
    import shutil
    import subprocess
    if not shutil.which("kubectl"):
        print(f"kubectl is not installed: {directory.name} rendered by this script alone")
        return
    out = subprocess.run(["kubectl", "kustomize", str(directory)], check=True,
                         capture_output=True, text=True).stdout
    real = [o for o in yaml.safe_load_all(out) if o]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, real)) == sorted(map(key, objects)), "the same objects"
    for o in real:
        ours = find(objects, o["kind"], o["metadata"]["name"])
        assert o.get("spec", {}).get("replicas") == ours.get("spec", {}).get("replicas"), key(o)
        assert o.get("data") == ours.get("data"), key(o)
        assert [c["image"] for c in pod_spec(o).get("containers", [])] == \
            [c["image"] for c in pod_spec(ours).get("containers", [])], key(o)


def main():
    out = []
    failed = total = 0
    for name, directory in [("base", BASE), ("overlay", OVERLAY)]:
        objects = render(directory)
        out += objects
        kubectl_agrees(directory, objects)
        for function in CHECKS:
            total += 1
            try:
                function(objects)
                print(f"test {name}::{function.__name__} ... ok")
            except AssertionError as error:
                failed += 1
                print(f"test {name}::{function.__name__} ... FAILED: {error!r}")
    pathlib.Path(sys.argv[1]).write_text(yaml.safe_dump_all(out))
    print(f"kubernetes: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
