#!/usr/bin/env python3
"""The admission storm: many browsers, each with its own RS256 login, reconnecting at once.

A fleet of ticketgate replicas shares one Redis (tickets, revocations) and one upstream
service (the bench upstream, several processes on one port). Every browser
(`bench/src/bin/storm.rs browsers`) behaves as the browser helper: it buys a ticket, waits
its `connect_after_ms`, opens the socket, and after a close or a refusal waits a full-jitter
backoff, never less than a refusal's `Retry-After`. Once all sockets are open, the replicas
are reloaded (SIGHUP) with the `admission:` budget, and then:

- upstream restart: every upstream process is killed (so every socket closes) and started
  again once the sockets are closed; all browsers reconnect within their first backoff
  (under half a second);
- replica killed: one replica is killed (SIGKILL); its browsers move to the others;
- the upstream restart again without `admission:`, to state the accept rate it meets then.

Per wall-clock second: tickets issued, refused (429 `busy`, 503 `upstream_unavailable`),
upgrades the upstream accepted (counted by the upstream), sockets open; each browser's time
from its close to its socket open again. Then ticketgate's CPU per refused ticket against a
verified one (keep-alive requests, distinct logins, each refused before verification or
issued after it). This machine allows 20,000 open files per process, so 20,000 sockets
(two descriptors each in a proxy) need four replicas, two upstream processes and two
browser processes. Servers on CPU 1, browsers on CPU 0.

    cargo build --release -p ticketgate -p ticketgate-bench --bins && python3 bench/storm.py [--smoke]
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from store import pinned

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


class Shape:
    def __init__(self, smoke):
        self.browsers = 400 if smoke else 20_000
        self.replicas = 2 if smoke else 4
        self.upstreams = 1 if smoke else 2
        self.browser_procs = 1 if smoke else 2
        self.upgrades_per_replica = 50 if smoke else 200
        self.retry_after = 1 if smoke else 2
        self.cpu_seconds = 1.0 if smoke else 3.0

    def fleet_budget(self, replicas):
        return replicas * self.upgrades_per_replica


def free_port():
    """A port below the ephemeral range (32768 on): with tens of thousands of connections in
    flight, a port picked from that range may be taken as some connection's source port
    before the server binds it."""
    import random
    while True:
        port = random.randint(10_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def wait_until(what, check, deadline=60.0):
    end = time.time() + deadline
    while not check():
        if time.time() > end:
            raise RuntimeError(f"storm bench: timed out waiting for {what}")
        time.sleep(0.05)


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def admission_block(shape, tickets_per_second=None):
    tickets = tickets_per_second or shape.upgrades_per_replica
    return (f"admission:\n  tickets_per_second: {tickets}\n"
            f"  upgrades_per_second: {shape.upgrades_per_replica}\n"
            f"  retry_after_seconds: {shape.retry_after}\n")


class Replica:
    """One ticketgate process and its config file, which a reload rewrites."""

    def __init__(self, fleet, index):
        self.fleet = fleet
        self.port, self.admin = free_port(), free_port()
        self.config = fleet.work / f"replica-{index}.yaml"
        self.log = fleet.work / f"replica-{index}.log"
        self.proc = None

    def write(self, admission=""):
        self.config.write_text(f"""listen: "127.0.0.1:{self.port}"
upstream: "127.0.0.1:{self.fleet.upstream_port}"
admin:
  listen: "127.0.0.1:{self.admin}"
threads: 1
shutdown_grace_seconds: 0
jwt:
  cache_size: 1000
  issuers:
    - issuer: "bench-RS256"
      audiences: ["bench"]
      algorithms: [RS256]
      public_key_files: ["{FIXTURES}/rsa.pub.pem"]
routes:
  - prefix: /ws
    auth: ticket
tickets:
  issue_path: /ws-ticket
  ttl_seconds: 60
  secret_file: "{FIXTURES}/ticket.secret"
  store: "redis://127.0.0.1:{self.fleet.redis_port}/0"
{admission}""")

    def start(self, admission=""):
        self.write(admission)
        self.proc = subprocess.Popen([*pinned(1), str(self.fleet.bin / "ticketgate"), "run", "-c", str(self.config)],
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        wait_until(f"replica on {self.port}", lambda: listening(self.port))
        wait_until("its Redis store", self.issues_401)

    def issues_401(self):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/ws-ticket", method="POST")
        try:
            urllib.request.urlopen(request, timeout=2)
        except urllib.error.HTTPError as e:
            return e.code == 401
        except OSError:
            return False
        return False

    def reloads(self):
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5).read().decode()
        for line in metrics.splitlines():
            if line.startswith('ticketgate_config_reloads_total{result="success"}'):
                return int(float(line.split()[-1]))
        return 0

    def reload(self, admission):
        before = self.reloads()
        self.write(admission)
        self.proc.send_signal(signal.SIGHUP)
        wait_until("the reload", lambda: self.reloads() > before)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


class Lines:
    """A process's stdout, read line by line on a thread of its own."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def last(self, prefix):
        for line in reversed(self.lines):
            if line.startswith(prefix):
                return line
        return None


class Fleet:
    def __init__(self, bin_dir, work, shape):
        self.bin = bin_dir
        self.work = work
        self.shape = shape
        self.redis = None
        self.upstream_procs = []
        self.upstream_logs = []
        self.replicas = []
        self.browsers = []

    def start_redis(self):
        self.redis_port = free_port()
        self.redis = subprocess.Popen([*pinned(1), "redis-server", "--port", str(self.redis_port), "--bind",
                                       "127.0.0.1", "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("redis", lambda: listening(self.redis_port))

    def start_upstreams(self):
        for i in range(self.shape.upstreams):
            log = self.work / f"upstream-{len(self.upstream_logs)}.log"
            self.upstream_logs.append(log)
            self.upstream_procs.append(subprocess.Popen(
                [*pinned(1), str(self.bin / "upstream"), "--listen", f"127.0.0.1:{self.upstream_port}",
                 "--reuse-port"], stdout=open(log, "w"), stderr=subprocess.STDOUT))
        wait_until("the upstream", lambda: listening(self.upstream_port))

    def kill_upstreams(self):
        for proc in self.upstream_procs:
            proc.kill()
            proc.wait()
        self.upstream_procs = []

    def accepts(self, since):
        """Upgrades the upstream processes accepted, per wall-clock second from `since`."""
        per_second = {}
        for log in self.upstream_logs:
            for line in log.read_text().splitlines():
                word, second, count = line.split()
                if word == "accepts" and int(second) >= since:
                    per_second[int(second)] = per_second.get(int(second), 0) + int(count)
        return per_second

    def start(self, tokens):
        self.upstream_port = free_port()
        self.start_redis()
        self.start_upstreams()
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "FLUSHALL"], check=True, capture_output=True)
        self.replicas = [Replica(self, i) for i in range(self.shape.replicas)]
        for replica in self.replicas:
            replica.start()
        addresses = ",".join(f"127.0.0.1:{r.port}" for r in self.replicas)
        share = self.shape.browsers // self.shape.browser_procs
        for p in range(self.shape.browser_procs):
            proc = subprocess.Popen(
                [*pinned(0), str(self.bin / "storm"), "--tokens-file", str(tokens), "browsers",
                 "--replicas", addresses, "--first", str(p * share), "--count", str(share)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.browsers.append(Lines(proc))
        wait_until("every browser's socket", lambda: all(b.last("ready") for b in self.browsers),
                   deadline=120 + self.shape.browsers / 200)

    def sockets(self):
        """(open, closed so far), summed over the browser processes' last samples."""
        lines = [b.last("open").split() for b in self.browsers if b.last("open")]
        return sum(int(line[1]) for line in lines), sum(int(line[2]) for line in lines)

    def report(self):
        out = []
        for b in self.browsers:
            b.proc.stdin.write("report\n")
            b.proc.stdin.flush()
        for b in self.browsers:
            b.proc.wait(timeout=30)
            b.thread.join(timeout=10)
            out.append(json.loads(b.lines[-1]))
        return out

    def stop(self):
        for b in self.browsers:
            if b.proc.poll() is None:
                b.proc.kill()
                b.proc.wait()
        self.browsers = []
        for replica in self.replicas:
            replica.stop(signal.SIGKILL)
        self.kill_upstreams()
        if self.redis:
            self.redis.kill()
            self.redis.wait()


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    return sorted_values[round((len(sorted_values) - 1) * q)]


def storm(bin_dir, work, shape, tokens, scenario, admission):
    """Runs one storm; returns its figures."""
    fleet = Fleet(bin_dir, work, shape)
    try:
        fleet.start(tokens)
        if admission:
            for replica in fleet.replicas:
                replica.reload(admission_block(shape))
        # The storm starts on a fresh wall-clock second: set-up's upgrades stay out of its rows.
        time.sleep(1 - time.time() % 1)
        began = int(time.time())
        started = time.time()
        if scenario == "upstream restart":
            affected, alive = shape.browsers, shape.replicas
            fleet.kill_upstreams()
            wait_until("the sockets to close", lambda: fleet.sockets()[1] >= affected, deadline=30)
            fleet.start_upstreams()
        else:
            affected, alive = shape.browsers // shape.replicas, shape.replicas - 1
            fleet.replicas[0].stop(signal.SIGKILL)
            wait_until("the replica's sockets to close", lambda: fleet.sockets()[1] >= affected, deadline=30)
        budget = shape.fleet_budget(alive) if admission else None
        deadline = (affected / budget + 10 if budget else 30) + 30
        wait_until("every browser reconnected", lambda: fleet.sockets()[0] == shape.browsers, deadline=deadline)
        took = time.time() - started
        ended = int(time.time())
        reports = fleet.report()
        accepts = fleet.accepts(began)
    finally:
        fleet.stop()
    return summarise(scenario, admission, shape, reports, accepts, (began, ended), took, affected, alive)


def summarise(scenario, admission, shape, reports, accepts, span, took, affected, alive):
    began, ended = span
    seconds = {}
    for report in reports:
        for second, what in report["seconds"].items():
            second = int(second)
            if not began <= second <= ended:
                continue
            total = seconds.setdefault(second, {})
            for key, value in what.items():
                total[key] = total.get(key, 0) + value
    rows = []
    for second in range(began, ended + 1):
        what = seconds.get(second, {})
        rows.append({"t": second - began, "issued": what.get("issued", 0), "busy": what.get("busy", 0),
                     "upstream_unavailable": what.get("upstream_unavailable", 0),
                     "failed_upgrades": what.get("failed_upgrades", 0),
                     "accepted": accepts.get(second, 0), "open": what.get("open", 0)})
    reconnects = sorted(ms for report in reports for ms in report["reconnect_ms"])
    return {"scenario": scenario, "admission": bool(admission), "rows": rows, "took": took,
            "affected": affected, "budget": shape.fleet_budget(alive) if admission else None,
            "reconnects": len(reconnects), "p50_ms": percentile(reconnects, 0.5),
            "p99_ms": percentile(reconnects, 0.99), "max_ms": reconnects[-1] if reconnects else 0,
            "peak_accepts": max(accepts.values(), default=0),
            "early_asks": sum(report["early_asks"] for report in reports)}


def ticket_cpu(bin_dir, work, shape, tokens, admission, path="/ws-ticket"):
    """ticketgate's CPU µs per answer on `path`, and the answers by status."""
    fleet = Fleet(bin_dir, work, shape)
    fleet.upstream_port = free_port()
    try:
        fleet.start_redis()
        fleet.start_upstreams()
        replica = Replica(fleet, 99)
        fleet.replicas = [replica]
        replica.start(admission)
        pid = replica.proc.pid
        before = cpu_seconds(pid)
        out = subprocess.run([*pinned(0), str(bin_dir / "storm"), "--tokens-file", str(tokens), "tickets",
                              "--replica", f"127.0.0.1:{replica.port}", "--path", path,
                              "--seconds", str(shape.cpu_seconds)],
                             check=True, capture_output=True, text=True).stdout
        used = cpu_seconds(pid) - before
    finally:
        fleet.stop()
    statuses = json.loads(out.strip().splitlines()[-1])["statuses"]
    answers = sum(statuses.values())
    return {"us": used * 1e6 / max(answers, 1), "statuses": statuses, "answers": answers}


def run(bin_dir, smoke):
    """Every storm and the CPU comparison: (markdown, problems)."""
    shape = Shape(smoke)
    with tempfile.TemporaryDirectory(prefix="ticketgate-storm-") as work:
        work = Path(work)
        tokens = work / "tokens.txt"
        with open(tokens, "w") as out:
            subprocess.run([str(bin_dir / "tokens"), "--alg", "RS256", "--count", str(shape.browsers), "--keys",
                            str(FIXTURES), "--issuer", "bench-RS256"], stdout=out, check=True)
        admission = admission_block(shape)
        storms = [storm(bin_dir, work, shape, tokens, "upstream restart", admission),
                  storm(bin_dir, work, shape, tokens, "replica killed", admission),
                  storm(bin_dir, work, shape, tokens, "upstream restart", "")]
        verified = ticket_cpu(bin_dir, work, shape, tokens, "")
        refused = ticket_cpu(bin_dir, work, shape, tokens, admission_block(shape, tickets_per_second=1))
        floor = ticket_cpu(bin_dir, work, shape, tokens, "", path="/nowhere")
        # Every login shares its first segment (the JWT header): no log may hold it.
        header = tokens.read_text().split(".", 1)[0]
        leaked = [log.name for log in work.glob("replica-*.log") if header in log.read_text()]
    return report(shape, storms, verified, refused, floor, leaked)


def report(shape, storms, verified, refused, floor, leaked):
    problems, lines = [], []
    targets = []
    for s in storms:
        if not s["admission"]:
            continue
        budget = s["budget"]
        over = s["peak_accepts"] / budget
        targets.append((f"{s['scenario']}: upstream accepts in the busiest second ≤ 1.1 × budget {budget:,}/s",
                        f"{s['peak_accepts']:,} ({over:.2f}×)", over <= 1.1))
        allowed = s["affected"] / budget + 10
        targets.append((f"{s['scenario']}: every browser reconnected within {s['affected']:,} / {budget:,} + 10 s "
                        f"= {allowed:.0f} s", f"max {s['max_ms'] / 1000:.1f} s", s["max_ms"] / 1000 <= allowed))
        targets.append((f"{s['scenario']}: no browser asked before its Retry-After", f"{s['early_asks']} early",
                        s["early_asks"] == 0))
        if s["reconnects"] < s["affected"]:
            problems.append(f"{s['scenario']}: {s['reconnects']} of {s['affected']} browsers reconnected")
    whole = refused["us"] / verified["us"]
    targets.append(("ticketgate CPU per refused ticket ≤ 5 % of a verified one, whole request",
                    f"{refused['us']:.1f} µs / {verified['us']:.1f} µs = {whole * 100:.1f} %", whole <= 0.05))
    above = max(refused["us"] - floor["us"], 0.0) / max(verified["us"] - floor["us"], 1e-9)
    targets.append((f"ticketgate CPU per refused ticket ≤ 5 % of a verified one, above the HTTP floor "
                    f"(a bodiless 404 on a kept-alive connection: {floor['us']:.1f} µs)",
                    f"{refused['us'] - floor['us']:.1f} µs / {verified['us'] - floor['us']:.1f} µs = "
                    f"{above * 100:.1f} %", above <= 0.05))
    if floor["statuses"].get("404", 0) != floor["answers"]:
        problems.append(f"the floor phase was not all 404: {floor['statuses']}")
    if refused["statuses"].get("429", 0) < refused["answers"] * 0.99:
        problems.append(f"the refused phase was not refused: {refused['statuses']}")
    if verified["statuses"].get("200", 0) != verified["answers"]:
        problems.append(f"the verified phase was not all issued: {verified['statuses']}")
    if leaked:
        problems.append(f"a login reached a replica's log: {leaked}")

    lines.append("| storm | admission | browsers | budget | upstream accepts, busiest second | "
                 "reconnect p50 / p99 / max | all reconnected after |")
    lines.append("|---|---|---|---|---|---|---|")
    for s in storms:
        lines.append(f"| {s['scenario']} | {'on' if s['admission'] else 'off'} | {s['affected']:,} | "
                     f"{(str(s['budget']) + '/s') if s['budget'] else '—'} | {s['peak_accepts']:,}/s | "
                     f"{s['p50_ms'] / 1000:.1f} / {s['p99_ms'] / 1000:.1f} / {s['max_ms'] / 1000:.1f} s | "
                     f"{s['took']:.1f} s |")
    lines.append("")
    lines.append("| target | measured | met |")
    lines.append("|---|---|---|")
    for name, measured, met in targets:
        lines.append(f"| {name} | {measured} | {'yes' if met else 'no'} |")
    for s in storms:
        lines.append("")
        lines.append(f"Per second, {s['scenario']}, admission {'on' if s['admission'] else 'off'} "
                     f"(t = 0: the {'upstream' if 'upstream' in s['scenario'] else 'replica'} is killed):")
        lines.append("")
        lines.append("| t (s) | tickets issued | 429 busy | 503 upstream_unavailable | failed upgrades | "
                     "upstream accepts | open sockets |")
        lines.append("|---|---|---|---|---|---|---|")
        for row in s["rows"]:
            lines.append(f"| {row['t']} | {row['issued']:,} | {row['busy']:,} | {row['upstream_unavailable']:,} | "
                         f"{row['failed_upgrades']:,} | {row['accepted']:,} | {row['open']:,} |")
    return "\n".join(lines), problems, targets


def main():
    smoke = "--smoke" in sys.argv
    bin_dir = ROOT / "target" / ("debug" if smoke else "release")
    markdown, problems, _ = run(bin_dir, smoke)
    print(markdown)
    for problem in problems:
        print(f"storm: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
