#!/usr/bin/env python3
"""The chart's monitoring objects, for tests/charts/promtool_test.sh.

Each command but `metric-names` reads `helm template` output on stdin.

  rules OUT                write the one PrometheusRule's spec to OUT as a
                           plain Prometheus rules file
  same-rules FILE          the PrometheusRule's groups equal FILE's
  dashboard OUT            write the dashboard JSON of the one ConfigMap
                           labelled for Grafana's sidecar to OUT
  dashboard-rules JSON OUT every PromQL expression of dashboard JSON (panel
                           targets), Grafana's variables replaced by values,
                           as recording rules in OUT for `promtool check rules`
  metric-names FILE...     every metric the PromQL in FILEs (rules files or
                           dashboards) selects is a name kiln's C++ sources
                           register (operator/, router/, runtime/, worker/)

Prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
SOURCES = ("operator", "router", "runtime", "worker")

# What the dashboard's variables stand for when its queries are checked.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$namespace": ".*",
    "$route": ".*",
}

# PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def one(text: str, kind: str) -> tuple[dict | None, list[str]]:
    found = [d for d in documents(text) if d.get("kind") == kind]
    if len(found) != 1:
        return None, [f"want one {kind}, the render has {len(found)}"]
    return found[0], []


def rules(text: str, out: str) -> list[str]:
    rule, problems = one(text, "PrometheusRule")
    if rule is None:
        return problems
    Path(out).write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return []


def same_rules(text: str, path: str) -> list[str]:
    rule, problems = one(text, "PrometheusRule")
    if rule is None:
        return problems
    want = yaml.safe_load(Path(path).read_text())["groups"]
    got = rule["spec"]["groups"]
    if got == want:
        return []
    return [f"the rendered PrometheusRule's groups differ from {path}:",
            json.dumps(got, sort_keys=True)[:2000], json.dumps(want, sort_keys=True)[:2000]]


def dashboard(text: str, out: str) -> list[str]:
    maps = [d for d in documents(text) if d.get("kind") == "ConfigMap"
            and "kiln.json" in (d.get("data") or {})]
    if len(maps) != 1:
        return [f"want one ConfigMap with kiln.json, the render has {len(maps)}"]
    Path(out).write_text(maps[0]["data"]["kiln.json"])
    return []


def panel_targets(dash: dict):
    """(panel title, refId, expr) for every target of every panel, rows included."""
    stack = list(dash.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target.get("refId", "?"), target.get("expr", "")


def substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def dashboard_rules(_: str, path: str, out: str) -> list[str]:
    dash = json.loads(Path(path).read_text())
    problems, records = [], []
    for n, (title, ref, expr) in enumerate(panel_targets(dash)):
        if not expr.strip():
            problems.append(f"panel {title!r} target {ref} has no expression")
            continue
        checked = substitute(expr)
        if "$" in checked:
            problems.append(f"panel {title!r} target {ref}: unknown variable in {expr}")
            continue
        records.append({"record": f"kiln:dashboard:target_{n}", "expr": checked})
    if not records:
        problems.append(f"{path} has no panel targets")
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "kiln-dashboard",
                                                     "rules": records}]}, sort_keys=False))
    return problems


def expressions(path: str) -> list[str]:
    text = Path(path).read_text()
    if path.endswith(".json"):
        dash = json.loads(text)
        exprs = [e for _, _, e in panel_targets(dash)]
        for var in dash.get("templating", {}).get("list", []):
            query = var.get("definition", "")
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            if m:
                exprs.append(m.group(1))
        return exprs
    return [r["expr"] for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, label
    matchers, groupings and durations left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # Strings.
    expr = re.sub(r"\{[^}]*\}", " ", expr)                      # Label matchers.
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)                     # Ranges.
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end():].lstrip()
        word = m.group(0)
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def registered() -> str:
    return "\n".join(p.read_text(errors="replace") for d in SOURCES
                     for p in (ROOT / d).rglob("*") if p.suffix in (".cc", ".h"))


def metric_names_command(_: str, *paths: str) -> list[str]:
    sources = registered()
    problems = []
    for path in paths:
        for expr in expressions(path):
            for name in sorted(metric_names(expr)):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if f'"{name}"' not in sources and f'"{base}"' not in sources:
                    problems.append(f"{path}: {name} (in {expr!r}) is not a metric kiln exports")
    return problems


def main(argv: list[str]) -> int:
    commands = {"rules": (rules, 1), "same-rules": (same_rules, 1), "dashboard": (dashboard, 1),
                "dashboard-rules": (dashboard_rules, 2), "metric-names": (metric_names_command, -1)}
    if not argv or argv[0] not in commands or (
            commands[argv[0]][1] >= 0 and len(argv) - 1 != commands[argv[0]][1]):
        print(__doc__, file=sys.stderr)
        return 2
    text = "" if argv[0] in ("metric-names", "dashboard-rules") else sys.stdin.read()
    problems = commands[argv[0]][0](text, *argv[1:])
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
