#!/usr/bin/env python3
"""Checks on `helm template` output of charts/kiln, for tests/charts/helm_test.sh.

Each command reads the rendered manifests on stdin.

  golden                 print the render in golden-file form: every CRD's
                         spec (checked by `crds` instead) and the dashboard's
                         JSON (by promtool_test.sh) are cut out, the rest kept
                         byte for byte
  crds KEEP              every crds/*.yaml is rendered exactly once, equal to
                         its source apart from the chart's labels and, when
                         KEEP is "true", the helm.sh/resource-policy annotation
  security               every Deployment's pods run with the restricted
                         security context
  flags MAIN_CC          every flag the chart passes to kiln-operator is one
                         the binary's usage text in MAIN_CC documents
  router-flags MAIN_CC   the same for kiln-router (router/main.cc)
  hub SECRET KEY         the router reads ModelDeployments from the hub: it is
                         passed --hub-kubeconfig naming the file that KEY of
                         SECRET is mounted read-only as, and its own cluster
                         grants it EndpointSlices but no ModelDeployments;
                         "hub - -" checks the opposite (no hub: no flag, no
                         volume, ModelDeployments granted)
  router-only            every object rendered is the router's (no operator
                         Deployment, RBAC, Service or ServiceAccount), and the
                         router's Deployment is there

Prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
SOURCE_RE = re.compile(r"^# Source: (\S+)$", re.MULTILINE)


def split_documents(text: str) -> list[tuple[str, str]]:
    """(source template, document text) for each document of a helm render."""
    out = []
    for chunk in re.split(r"^---\n", text, flags=re.MULTILINE):
        if not chunk.strip():
            continue
        m = SOURCE_RE.search(chunk)
        out.append((m.group(1) if m else "", chunk))
    return out


def golden(text: str) -> list[str]:
    parts = []
    for source, doc in split_documents(text):
        if "/templates/crds/" in source:
            # Keep apiVersion, kind and metadata (names, labels, keep
            # annotation); the spec is compared with crds/ by `crds`.
            head = doc.split("\nspec:\n", 1)[0]
            name = source.rsplit("/", 1)[1]
            doc = f"{head}\nspec: {{}}  # crds/{name}, compared by chart_checks.py crds\n"
        elif source.endswith("/templates/grafana-dashboard.yaml"):
            # The dashboard is files/grafana-dashboard.json verbatim
            # (tests/charts/promtool_test.sh checks it); only its wrapping here.
            head = doc.split("\n  kiln.json: |\n", 1)[0]
            doc = f"{head}\n  kiln.json: files/grafana-dashboard.json\n"
        parts.append("---\n" + doc)
    sys.stdout.write("".join(parts))
    return []


def crds(text: str, keep: str) -> list[str]:
    problems = []
    rendered = {}
    for source, doc in split_documents(text):
        obj = yaml.safe_load(doc)
        if isinstance(obj, dict) and obj.get("kind") == "CustomResourceDefinition":
            rendered.setdefault(obj["metadata"]["name"], []).append((source, obj))
    sources = sorted((ROOT / "crds").glob("*.yaml"))
    if not sources:
        problems.append("no crds/*.yaml to compare with")
    for path in sources:
        want = yaml.safe_load(path.read_text())
        name = want["metadata"]["name"]
        got = rendered.pop(name, [])
        if len(got) != 1:
            problems.append(f"{name}: rendered {len(got)} times, want once")
            continue
        template, obj = got[0]
        if not template.endswith(f"/templates/crds/{path.name}"):
            problems.append(f"{name}: rendered from {template}, want templates/crds/{path.name}")
        meta = obj["metadata"]
        labels = meta.pop("labels", {}) or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            if key not in labels:
                problems.append(f"{name}: label {key} missing")
        if labels.get("app.kubernetes.io/component") != "crds":
            problems.append(f"{name}: label app.kubernetes.io/component is not crds")
        for key, value in (want["metadata"].get("labels") or {}).items():
            if labels.get(key) != value:
                problems.append(f"{name}: the CRD's own label {key} was lost")
        annotations = meta.pop("annotations", {}) or {}
        policy = annotations.pop("helm.sh/resource-policy", None)
        if keep == "true" and policy != "keep":
            problems.append(f"{name}: crds.keep=true but no helm.sh/resource-policy: keep")
        if keep != "true" and policy is not None:
            problems.append(f"{name}: crds.keep=false but helm.sh/resource-policy is {policy!r}")
        if annotations:
            meta["annotations"] = annotations
        want["metadata"].pop("labels", None)
        if obj != want:
            problems.append(f"{name}: the rendered CRD differs from {path.relative_to(ROOT)} "
                            "beyond the chart's labels and annotation "
                            "(run scripts/sync_chart_crds.py?)")
    for name in rendered:
        problems.append(f"{name}: rendered, but no crds/*.yaml defines it")
    return problems


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def security(text: str) -> list[str]:
    problems = []
    deployments = [yaml.safe_load(doc) for _, doc in split_documents(text)]
    deployments = [d for d in deployments if isinstance(d, dict) and d.get("kind") == "Deployment"]
    if not deployments:
        problems.append("no Deployment rendered")
    for d in deployments:
        name = d["metadata"]["name"]
        pod = d["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext") or {}
        if pod_sc.get("runAsNonRoot") is not True:
            problems.append(f"{name}: pod securityContext.runAsNonRoot is not true")
        if pod_sc.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            problems.append(f"{name}: pod shares a host namespace")
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c.get("securityContext") or {}
            for key, want in RESTRICTED_CONTAINER.items():
                if sc.get(key) != want:
                    problems.append(f"{name}/{c['name']}: securityContext.{key} is "
                                    f"{sc.get(key)!r}, want {want!r}")
            if (sc.get("capabilities") or {}).get("add"):
                problems.append(f"{name}/{c['name']}: adds capabilities")
            if "resources" not in c or not c["resources"]:
                problems.append(f"{name}/{c['name']}: no resources")
    return problems


def documented_flags(main_cc: str) -> set[str]:
    """The flags a main.cc defines: its --help is generated from these definitions."""
    source = Path(main_cc).read_text()
    return {"--" + name for name in re.findall(
        r"flags\s*\.(?:String|Strings|Bool|Int|Double|Duration|Enum)\(\s*\"([a-z][a-z-]*)\"", source)}


def deployments_from(text: str, template: str) -> list[dict]:
    return [yaml.safe_load(doc) for source, doc in split_documents(text)
            if source.endswith(f"/templates/{template}")]


def undocumented_args(container: dict, known: set[str], binary: str) -> list[str]:
    problems = []
    for arg in container.get("args", []):
        flag = arg.split("=", 1)[0]
        if flag not in known:
            problems.append(f"the chart passes {flag}, which {binary} --help does not list")
    return problems


def flags(text: str, main_cc: str) -> list[str]:
    known = documented_flags(main_cc)
    if not known:
        return [f"{main_cc}: no flag definitions found"]
    problems = []
    operators = deployments_from(text, "deployment.yaml")
    if len(operators) != 1:
        return [f"want one operator Deployment, found {len(operators)}"]
    container = operators[0]["spec"]["template"]["spec"]["containers"][0]
    if container.get("command") != ["kiln-operator"]:
        problems.append(f"the operator's command is {container.get('command')!r}")
    return problems + undocumented_args(container, known, "kiln-operator")


def router_flags(text: str, main_cc: str) -> list[str]:
    known = documented_flags(main_cc)
    if not known:
        return [f"{main_cc}: no flag definitions found"]
    routers = deployments_from(text, "router-deployment.yaml")
    if len(routers) != 1:
        return [f"want one router Deployment, found {len(routers)}"]
    container = routers[0]["spec"]["template"]["spec"]["containers"][0]
    return undocumented_args(container, known, "kiln-router")


def hub(text: str, secret: str, key: str) -> list[str]:
    routers = deployments_from(text, "router-deployment.yaml")
    if len(routers) != 1:
        return [f"want one router Deployment, found {len(routers)}"]
    pod = routers[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    paths = [a.split("=", 1)[1] for a in container.get("args", [])
             if a.startswith("--hub-kubeconfig=")]
    rules = [rule for _, doc in split_documents(text)
             for obj in [yaml.safe_load(doc)]
             if isinstance(obj, dict) and obj.get("kind") in ("Role", "ClusterRole")
             and obj["metadata"]["labels"].get("app.kubernetes.io/component") == "router"
             for rule in obj.get("rules", [])]
    granted = {r for rule in rules for r in rule.get("resources", [])}
    problems = []
    if "endpointslices" not in granted:
        problems.append("the router's role does not grant endpointslices")
    if secret == "-":
        if paths:
            problems.append(f"no hub Secret, yet the router is passed --hub-kubeconfig={paths[0]}")
        if pod.get("volumes") or container.get("volumeMounts"):
            problems.append("no hub Secret, yet the router mounts volumes")
        if "modeldeployments" not in granted:
            problems.append("no hub Secret, yet the router's role does not grant modeldeployments")
        return problems
    if len(paths) != 1:
        return problems + [f"want --hub-kubeconfig once in the router's args, found {len(paths)}"]
    folder, _, name = paths[0].rpartition("/")
    mounts = [m for m in container.get("volumeMounts", []) if m.get("mountPath") == folder]
    if len(mounts) != 1 or mounts[0].get("readOnly") is not True:
        problems.append(f"want one read-only volume mounted at {folder}, found {mounts!r}")
        return problems
    volumes = [v for v in pod.get("volumes", []) if v.get("name") == mounts[0]["name"]]
    source = volumes[0].get("secret", {}) if len(volumes) == 1 else {}
    if source.get("secretName") != secret:
        problems.append(f"the volume at {folder} is not the Secret {secret}: {volumes!r}")
    if source.get("items") != [{"key": key, "path": name}]:
        problems.append(f"the Secret's key {key} is not mounted as {name}: {source.get('items')!r}")
    if "modeldeployments" in granted:
        problems.append("ModelDeployments come from the hub, yet the router's role grants them here")
    return problems


def router_only(text: str) -> list[str]:
    problems = []
    kinds = []
    for source, doc in split_documents(text):
        obj = yaml.safe_load(doc)
        if not isinstance(obj, dict):
            continue
        kinds.append(obj["kind"])
        component = (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
        if component != "router":
            problems.append(f"{obj['kind']} {obj['metadata']['name']} ({source}) is not the "
                            f"router's: component {component!r}")
    if kinds.count("Deployment") != 1:
        problems.append(f"want the router's Deployment alone, found {kinds.count('Deployment')}")
    return problems


def main(argv: list[str]) -> int:
    text = sys.stdin.read()
    commands = {"golden": (golden, 0), "crds": (crds, 1), "security": (security, 0),
                "flags": (flags, 1), "router-flags": (router_flags, 1), "hub": (hub, 2),
                "router-only": (router_only, 0)}
    if not argv or argv[0] not in commands or len(argv) - 1 != commands[argv[0]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    problems = commands[argv[0]][0](text, *argv[1:])
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
