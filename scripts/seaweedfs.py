#!/usr/bin/env python3
"""Starts and stops a local SeaweedFS (Apache-2.0) whose S3 gateway listens on
127.0.0.1 and verifies SigV4 against a fixed test identity: the S3 server of
the storage tests and of bench/s3_checkpoint_bench.sh.

  seaweedfs.py up --dir DIR     start (detached), wait until S3 answers, write
                                DIR/env (AWS_* lines for the worker, and
                                KILN_S3_TLS_ENDPOINT / KILN_S3_TLS_CA: the same
                                gateway over HTTPS with a private CA) and exit
  seaweedfs.py down --dir DIR   stop it; fails if it does not exit

The binary is weed from scripts/build-tools.sh seaweedfs (KILN_SEAWEEDFS_BIN
overrides). Data lives under DIR/data and is removed by down.
"""
import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ACCESS_KEY = "kiln-test-access"
SECRET_KEY = "kiln-test-secret-key"


def weed_binary():
    explicit = os.environ.get("KILN_SEAWEEDFS_BIN")
    if explicit:
        return explicit
    cache = os.environ.get("KILN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kiln")
    return os.path.join(cache, "tools", "bin", "weed")


def free_port_pair():
    """A port P with P and P + 10000 (SeaweedFS's gRPC port) free."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    sys.exit("seaweedfs.py: no free port pair found")


def make_tls(folder):
    """A private CA and a certificate it signs for 127.0.0.1 (openssl, from
    scripts/setup.sh's packages): the S3 gateway's HTTPS port serves it, so
    the tests reach a store behind a private CA. Returns the CA's path."""
    os.makedirs(folder, exist_ok=True)
    def openssl(*argv):
        r = subprocess.run(["openssl", *argv], cwd=folder, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"seaweedfs.py: openssl {argv[0]} failed: {r.stderr.strip()}")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
            "-subj", "/CN=kiln test S3 CA")
    openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(folder, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "7", "-extfile", "san.ext")
    return os.path.join(folder, "ca.crt")


def start(args, weed, config, tls):
    """Starts weed on fresh ports and waits for its S3 gateway. Returns
    (ports, process, None), or (ports, None, why) after cleaning up when weed
    exited or the gateway did not answer in time."""
    data = os.path.join(args.dir, "data")
    shutil.rmtree(data, ignore_errors=True)  # no raft state from a failed try
    os.makedirs(data)
    ports = {name: free_port_pair() for name in ("master", "volume", "filer", "s3", "s3_https")}
    with open(os.path.join(args.dir, "ports"), "w") as f:
        json.dump(ports, f)
    # Only the listeners the tests use: the Iceberg and Lance catalogs would
    # bind fixed ports (8181, 9101) that a second instance or another program
    # may hold, and telemetry would send reports off this machine.
    cmd = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-dir=" + data,
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
           f"-filer.port={ports['filer']}", "-s3", f"-s3.port={ports['s3']}",
           "-s3.config=" + config, "-master.volumeSizeLimitMB=256", "-volume.max=50",
           "-filer.maxMB=16", f"-s3.port.https={ports['s3_https']}",
           "-s3.cert.file=" + os.path.join(tls, "tls.crt"),
           "-s3.key.file=" + os.path.join(tls, "tls.key"),
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
    log = open(os.path.join(args.dir, "weed.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with open(os.path.join(args.dir, "pid"), "w") as f:
        f.write(str(proc.pid))
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    deadline = time.monotonic() + args.timeout
    while True:
        if proc.poll() is not None:
            remove_sockets(ports)
            os.remove(os.path.join(args.dir, "pid"))
            return ports, None, f"weed exited with {proc.returncode}: {errors(args.dir)}"
        try:
            urllib.request.urlopen(endpoint + "/", timeout=2)
            return ports, proc, None
        except urllib.error.HTTPError:
            return ports, proc, None  # 403 to an unsigned request: the gateway is up.
        except OSError:
            pass
        if time.monotonic() > deadline:
            down(args)
            return ports, None, f"S3 gateway not up after {args.timeout}s"
        time.sleep(0.2)


def errors(folder):
    """The last error lines of weed.log (glog's E and F lines), for a
    message that names the cause without opening the log."""
    try:
        lines = open(os.path.join(folder, "weed.log"), errors="replace").read().splitlines()
    except OSError:
        return "no weed.log"
    bad = [l for l in lines if l[:1] in ("E", "F")] or lines
    return " | ".join(bad[-3:]) or "weed.log is empty"


def remove_sockets(ports):
    """weed leaves unix sockets named after its ports in /tmp
    (/tmp/seaweedfs-<server>[-grpc]-<port>.sock); a later instance that gets
    the same port would find them in its way."""
    for port in ports.values():
        for p in (port, port + 10000):
            for path in glob.glob(f"/tmp/seaweedfs-*-{p}.sock"):
                try:
                    os.remove(path)
                except OSError:
                    pass


def up(args):
    weed = weed_binary()
    if not os.access(weed, os.X_OK):
        sys.exit(f"seaweedfs.py: SeaweedFS is not built ({weed} is missing): "
                 "run scripts/build-tools.sh seaweedfs (scripts/setup.sh does)")
    os.makedirs(args.dir, exist_ok=True)
    config = os.path.join(args.dir, "identities.json")
    with open(config, "w") as f:
        json.dump({"identities": [{
            "name": "kiln-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
    tls = os.path.join(args.dir, "tls")
    ca = make_tls(tls)
    # Ports are picked free and then bound by weed a moment later, so a
    # sibling fixture starting at the same time (an apiserver, etcd, a kubelet)
    # can take one in between; weed then exits. A start that fails that way is
    # tried again on fresh ports, and the earlier log kept beside the new one.
    for attempt in range(1, 4):
        ports, proc, failure = start(args, weed, config, tls)
        if failure is None:
            break
        os.replace(os.path.join(args.dir, "weed.log"),
                   os.path.join(args.dir, f"weed.attempt{attempt}.log"))
        print(f"seaweedfs.py: attempt {attempt}: {failure}", file=sys.stderr)
    else:
        sys.exit(f"seaweedfs.py: weed did not start in 3 attempts; see {args.dir}/weed.attempt*.log")
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    with open(os.path.join(args.dir, "env"), "w") as f:
        f.write(f"AWS_ENDPOINT_URL={endpoint}\nAWS_ACCESS_KEY_ID={ACCESS_KEY}\n"
                f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}\nAWS_REGION=us-east-1\n"
                f"KILN_S3_TLS_ENDPOINT=https://127.0.0.1:{ports['s3_https']}\n"
                f"KILN_S3_TLS_CA={ca}\n")
    print(endpoint)


def down(args):
    pid_file = os.path.join(args.dir, "pid")
    if not os.path.exists(pid_file):
        return
    pid = int(open(pid_file).read())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    def gone():
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    # weed's graceful shutdown can take longer than a test should wait: after
    # 5 s it is killed, which loses nothing (its data is deleted below).
    for _ in range(50):
        if gone():
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(50):
            if gone():
                break
            time.sleep(0.1)
        else:
            sys.exit(f"seaweedfs.py: weed (pid {pid}) is still running after SIGKILL")
    os.remove(pid_file)
    ports_file = os.path.join(args.dir, "ports")
    if os.path.exists(ports_file):
        remove_sockets(json.load(open(ports_file)))
    shutil.rmtree(os.path.join(args.dir, "data"), ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    up(args) if args.command == "up" else down(args)


if __name__ == "__main__":
    main()
