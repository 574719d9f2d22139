"""Certificates (a CA per cluster, the apiserver's serving certificate and a
client certificate per user, made with openssl) and kubeconfigs, written with
a YAML library."""

from __future__ import annotations

import base64
import random
import subprocess
from pathlib import Path

import yaml

from .common import ClusterError


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def make_pki(pki: Path, cluster: str, extra_ips: tuple[str, ...] = (),
             extra_clients: dict[str, str] | None = None) -> None:
    """A CA per cluster, the apiserver's serving cert and one client cert per
    user. `extra_ips` are further addresses the apiserver is reached at (the
    real nodes' side of the API forwarder); `extra_clients` maps further
    client cert names to their subjects (kubelets, kube-proxy, coredns)."""
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", f"/CN=kiln-local-ca-{cluster}", cwd=pki)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    leaves = {
        "apiserver": ("/CN=kube-apiserver", "serverAuth",
                      "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                      "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,"
                      "IP:127.0.0.1,IP:10.96.0.1" + "".join(f",IP:{ip}" for ip in extra_ips)),
        "admin": ("/O=system:masters/CN=kiln-admin", "clientAuth", None),
        "controller-manager": ("/CN=system:kube-controller-manager", "clientAuth", None),
        "scheduler": ("/CN=system:kube-scheduler", "clientAuth", None),
        "kwok": ("/O=system:masters/CN=kiln-kwok", "clientAuth", None),
    }
    for name, subject in (extra_clients or {}).items():
        leaves[name] = (subject, "clientAuth", None)
    for name, (subject, usage, sans) in leaves.items():
        ext = pki / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={usage}"]
        if sans:
            lines.append(f"subjectAltName={sans}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-set_serial", str(random.getrandbits(63)), "-days", "365",
                 "-extfile", ext.name, "-out", f"{name}.crt", cwd=pki)
        (pki / f"{name}.csr").unlink()
        ext.unlink()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_yaml(entries: list[tuple[str, str, Path, str]]) -> str:
    """A kubeconfig with one context per entry: (context name, server URL, pki
    dir, user cert name); the first entry's context is the current one."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": entries[0][0],
        "clusters": [{"name": name, "cluster": {
            "server": server, "certificate-authority-data": _b64(pki / "ca.crt")}}
            for name, server, pki, _ in entries],
        "users": [{"name": f"{name}-{user}", "user": {
            "client-certificate-data": _b64(pki / f"{user}.crt"),
            "client-key-data": _b64(pki / f"{user}.key")}}
            for name, _, pki, user in entries],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-{user}"}}
                     for name, _, _, user in entries],
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)
