#!/usr/bin/env python3
"""Runs kiln's Argo CD health checks (integrations/argocd/resource_customizations)
in a real Lua 5.1 interpreter (Debian's lua5.1; Argo CD embeds gopher-lua,
which speaks Lua 5.1), the way Argo CD's own tests run theirs: every case of
each kind's health_test.yaml loads its testdata object, hands it to health.lua
as the global `obj` and compares the returned status and message.

Also checks that every status.phase the API defines (api/v1alpha1/*.yaml) has
a fixture, that every kind has one for a new object without status, and that
integrations/argocd/argocd-cm.yaml and argo-cd-values.yaml are in step with
the scripts. Prints one line per case and a summary; exit 1 on any failure.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
CUSTOMIZATIONS = ROOT / "integrations" / "argocd" / "resource_customizations"
API = ROOT / "api" / "v1alpha1"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
# Where api/v1alpha1 defines a kind's phases.
PHASE_SOURCES = {"TrainingJob": "trainingjob.yaml", "ModelDeployment": "modeldeployment.yaml"}


class JsonLikeLoader(yaml.SafeLoader):
    """YAML as Argo CD sees the object (JSON from the API server): timestamps
    stay strings."""


JsonLikeLoader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def lua_string(s: str) -> str:
    out = []
    for ch in s.encode("utf-8"):
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append(f"\\{ch:03d}")
    return '"' + "".join(out) + '"'


def lua_value(v) -> str:
    """A Lua expression for a JSON-like value (null fields are left out, as
    gopher-lua's conversion of a JSON object leaves no key for them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{v} is not JSON")
        return repr(v)
    if isinstance(v, str):
        return lua_string(v)
    if isinstance(v, list):
        return "{" + ", ".join(lua_value(x) for x in v if x is not None) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"[{lua_string(str(k))}] = {lua_value(x)}"
                               for k, x in v.items() if x is not None) + "}"
    raise ValueError(f"cannot pass {type(v).__name__} to Lua")


DRIVER = """
obj = %s
local check = assert(loadfile(%s))
local ok, hs = pcall(check)
if not ok then io.write("ERROR\\0", tostring(hs)) return end
if type(hs) ~= "table" then io.write("ERROR\\0returned ", type(hs)) return end
io.write(tostring(hs.status), "\\0", tostring(hs.message))
"""


def run_case(lua: str, health: Path, obj: dict) -> tuple[str, str]:
    script = DRIVER % (lua_value(obj), lua_string(str(health)))
    done = subprocess.run([lua], input=script.encode(), capture_output=True, timeout=30)
    if done.returncode != 0:
        return "ERROR", done.stderr.decode(errors="replace").strip()
    status, _, message = done.stdout.decode().partition("\0")
    return status, message


def phases(kind: str) -> list[str]:
    schema = yaml.safe_load((API / PHASE_SOURCES[kind]).read_text())
    return schema["status"]["properties"]["phase"]["enum"]


def main() -> int:
    lua = shutil.which("lua5.1")
    if lua is None:
        print("FAIL: lua5.1 not found: apt-get install lua5.1 (scripts/setup.sh does)")
        return 1
    passed = failed = 0

    def report(good: bool, name: str, detail: str = "") -> None:
        nonlocal passed, failed
        if good:
            passed += 1
            print(f"ok: {name}")
        else:
            failed += 1
            print(f"FAIL: {name}" + (f"\n  {detail}" if detail else ""))

    kinds = sorted(p for p in CUSTOMIZATIONS.glob("*/*") if (p / "health.lua").exists())
    report({k.name for k in kinds} == {"TrainingJob", "ModelDeployment", "MemberCluster"},
           "a health check for each of kiln's kinds", str([k.name for k in kinds]))
    for kind in kinds:
        health = kind / "health.lua"
        cases = yaml.safe_load((kind / "health_test.yaml").read_text())["tests"]
        seen_phases, without_status = set(), False
        for case in cases:
            path = kind / case["inputPath"]
            obj = yaml.load(path.read_text(), Loader=JsonLikeLoader)
            status = obj.get("status") or {}
            without_status |= "status" not in obj
            if "phase" in status:
                seen_phases.add(status["phase"])
            want = case["healthStatus"]
            got = run_case(lua, health, obj)
            name = f"{kind.parent.name}/{kind.name} {case['inputPath']}: {want['status']}"
            report(got == (want["status"], want.get("message", "")) and got[0] in STATUSES, name,
                   f"got {got[0]}: {got[1]!r}, want {want['status']}: {want.get('message', '')!r}")
        report(without_status, f"{kind.name}: a case for a new object without status")
        if kind.name in PHASE_SOURCES:
            missing = [p for p in phases(kind.name) if p not in seen_phases]
            report(not missing, f"{kind.name}: a case for every status.phase in api/v1alpha1",
                   f"no fixture for {missing}")
        untested = {p.name for p in (kind / "testdata").glob("*.yaml")} - {
            Path(c["inputPath"]).name for c in cases}
        report(not untested, f"{kind.name}: every testdata file is a case", str(sorted(untested)))

    done = subprocess.run([sys.executable, str(ROOT / "integrations/argocd/render_config.py"),
                           "--check"], capture_output=True, text=True)
    report(done.returncode == 0, "argocd-cm.yaml and argo-cd-values.yaml match the health checks",
           done.stdout + done.stderr)
    print(f"argocd health checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
