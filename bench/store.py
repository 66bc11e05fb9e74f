#!/usr/bin/env python3
"""What a redemption costs in the shared Redis, per topology.

Starts each topology on loopback (Redis pinned to CPU 1), drives ticketgate's own Redis store
against it with `bench/src/bin/store.rs` (pinned to CPU 0: one thread, 32 redemptions in
flight, as one Pingora worker, unless a row says one), and prints a Markdown table: redemptions/s, p50 and p99.
bench/run.py includes the table in BENCHMARKS.md; on its own:

    cargo build --release -p ticketgate-bench --bin store && python3 bench/store.py
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core):
    return ["taskset", "-c", str(core)] if (os.cpu_count() or 1) >= 2 else []


def cli(port, *command):
    return subprocess.run(["redis-cli", "-p", str(port), *command], capture_output=True, text=True,
                          timeout=5).stdout


def wait_until(what, check, deadline=30.0):
    end = time.time() + deadline
    while not check():
        if time.time() > end:
            raise SystemExit(f"store bench: timed out waiting for {what}")
        time.sleep(0.05)


class Topologies:
    """Redis processes, stopped together."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def server(self, *args):
        port = free_port()
        self.procs.append(subprocess.Popen(
            [*pinned(1), "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(f"redis on {port}", lambda: "PONG" in cli(port, "PING"))
        return port

    def replica_of(self, master):
        port = self.server("--replicaof", "127.0.0.1", str(master))
        wait_until("the replica to sync", lambda: "master_link_status:up" in cli(port, "INFO", "replication"))
        return port

    def cluster(self):
        ports = [self.server("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{i}.conf",
                             "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000")
                 for i in range(6)]
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True)
        wait_until("the cluster", lambda: all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports))
        return ports

    def sentinel(self, master):
        port = free_port()
        conf = self.work / f"sentinel-{port}.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.work}\n"
                        f"sentinel monitor mymaster 127.0.0.1 {master} 1\n")
        self.procs.append(subprocess.Popen([*pinned(1), "redis-sentinel", str(conf)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until("the sentinel", lambda: str(master) in cli(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"))
        return port

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def measure(binary, args, seconds):
    out = subprocess.run([*pinned(0), str(binary), "--seconds", str(seconds), *args], check=True,
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(binary, seconds=4.0):
    """The Markdown table of every topology, and the failed redemptions in all."""
    with tempfile.TemporaryDirectory(prefix="ticketgate-store-bench-") as work:
        t = Topologies(Path(work))
        try:
            node = t.server()
            master = t.server()
            t.replica_of(master)
            cluster = t.cluster()
            sentinel = t.sentinel(master)
            url = lambda port: f"redis://127.0.0.1:{port}"
            rows = [
                ("one node, one redemption in flight", ["--node", url(node), "--concurrency", "1"]),
                ("one node + replica, WAIT 1, one in flight",
                 ["--node", url(master), "--wait", "1", "--concurrency", "1"]),
                ("one node", ["--node", url(node)]),
                ("one node + replica, WAIT 1", ["--node", url(master), "--wait", "1"]),
                ("Cluster, 3 masters + 3 replicas", [a for p in cluster[:2] for a in ("--cluster", url(p))]),
                ("Cluster, WAIT 1", [a for p in cluster[:2] for a in ("--cluster", url(p))] + ["--wait", "1"]),
                ("Sentinel master + replica, WAIT 1", ["--sentinel", url(sentinel), "--wait", "1"]),
            ]
            lines = ["| topology | redemptions/s (one thread) | p50 µs | p99 µs | failures |",
                     "|---|---:|---:|---:|---:|"]
            failures = 0
            for name, args in rows:
                f = measure(binary, args, seconds)
                failures += f["failures"] + (0 if f["per_second"] > 0 else 1)
                lines.append(f"| {name} | {f['per_second']:,.0f} | {f['p50_us']} | {f['p99_us']} | {f['failures']} |")
            return "\n".join(lines), failures
        finally:
            t.stop()


if __name__ == "__main__":
    profile = sys.argv[1] if len(sys.argv) > 1 else "release"
    print(table(ROOT / "target" / profile / "store")[0])
