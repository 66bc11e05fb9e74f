#!/usr/bin/env python3
"""The benchmark: ticketgate against a plain Pingora passthrough and the upstream itself.

Started by bench/run.sh, which builds the binaries first. Every proxy and the upstream run
pinned to one core, the load generator to the other; scenarios are interleaved (A B C A B C
...) so drift hits all of them alike; each figure is the median over rounds and is reported
as a ratio against the passthrough (and direct) measured in the same run.

    bench/run.sh            full run, writes BENCHMARKS.md
    bench/run.sh --smoke    a few seconds per scenario; asserts every scenario produced
                            numbers and no request failed (CI runs this)
"""

import argparse
import json
import os
import shutil
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import store as store_bench
import storm as storm_bench
import tls as tls_bench

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
ALGORITHMS = ["HS256", "RS256", "ES256", "EdDSA"]
KEY_FOR = {"HS256": "secret_file: \"{f}/hs.secret\"", "RS256": "public_key_files: [\"{f}/rsa.pub.pem\"]",
           "ES256": "public_key_files: [\"{f}/ec256.pub.pem\"]", "EdDSA": "public_key_files: [\"{f}/ed25519.pub.pem\"]"}
# Smaller than the 10,000 rotated tokens: rotation then measures full verification, while a
# repeated token measures the cache.
TOKEN_CACHE_SIZE = 1000
DISTINCT_TOKENS = 10_000


class Settings:
    def __init__(self, smoke, profile):
        self.smoke = smoke
        self.bin = ROOT / "target" / ("debug" if profile == "dev" else profile)
        self.seconds = 1 if smoke else 4
        self.rounds = 1 if smoke else 3
        self.http_connections = 64
        self.ws_handshake_workers = 32
        self.tickets = 1_000 if smoke else 20_000
        self.echo_connections = 64
        self.idle_connections = 200 if smoke else 5_000
        self.wave_connections = 100 if smoke else 3_000
        self.waves = 3
        cpus = os.cpu_count() or 1
        self.pin_servers = ["taskset", "-c", "1"] if cpus >= 2 else []
        self.pin_load = ["taskset", "-c", "0"] if cpus >= 2 else []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, deadline=60.0):
    start = time.time()
    while time.time() - start < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {deadline} s")


class Processes:
    """Every server the bench starts, stopped together at the end."""

    def __init__(self, settings, work):
        self.settings = settings
        self.work = work
        self.running = []

    def start(self, name, argv, port):
        log = open(self.work / f"{name}.log", "w")
        proc = subprocess.Popen(self.settings.pin_servers + argv, stdout=log, stderr=subprocess.STDOUT)
        self.running.append(proc)
        wait_for_port(port)
        return proc

    def stop(self, proc):
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.running.remove(proc)

    def stop_all(self):
        for proc in list(self.running):
            self.stop(proc)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


HAPROXY_ALGORITHMS = ["HS256", "RS256", "ES256"]
STORM_ALGORITHMS = ["RS256", "ES256"]


def haproxy_config(work, upstream_port):
    """HAProxy 2.6 with jwt_verify, as a user would set it up: alg allowlist, signature, exp.
    None when haproxy is not installed (the peer is optional)."""
    if not shutil.which("haproxy"):
        return None
    certs = {"RS256": FIXTURES / "rsa.pub.pem", "ES256": FIXTURES / "ec256.pub.pem"}
    secret = (FIXTURES / "hs.secret").read_text().strip()
    port = free_port()
    path = work / "haproxy.cfg"
    path.write_text(f"""global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:{port}
    acl jwt_route path_beg /api
    http-request set-var(txn.bearer) http_auth_bearer if jwt_route
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg') if jwt_route
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int') if jwt_route
    http-request set-var(txn.now) date if jwt_route
    http-request deny deny_status 401 if jwt_route !{{ var(txn.alg) -m str HS256 RS256 ES256 }}
    http-request deny deny_status 401 if jwt_route {{ var(txn.alg) -m str HS256 }} !{{ var(txn.bearer),jwt_verify(txn.alg,"{secret}") -m int 1 }}
    http-request deny deny_status 401 if jwt_route {{ var(txn.alg) -m str RS256 }} !{{ var(txn.bearer),jwt_verify(txn.alg,"{certs['RS256']}") -m int 1 }}
    http-request deny deny_status 401 if jwt_route {{ var(txn.alg) -m str ES256 }} !{{ var(txn.bearer),jwt_verify(txn.alg,"{certs['ES256']}") -m int 1 }}
    http-request deny deny_status 401 if jwt_route {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
    default_backend upstream
backend upstream
    http-reuse always
    server up 127.0.0.1:{upstream_port}
""")
    return path, port


def haproxy_ws_config(work, name, upstream_port):
    """HAProxy as a plain WebSocket proxy, one thread, tunnel timeout as a user sets it.
    None when haproxy is not installed."""
    if not shutil.which("haproxy"):
        return None
    port = free_port()
    path = work / f"{name}.cfg"
    # Two descriptors a socket, under this machine's 20,000 open files per process.
    path.write_text(f"""global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend ws
    bind 127.0.0.1:{port}
    default_backend upstream
backend upstream
    server up 127.0.0.1:{upstream_port}
""")
    return ["haproxy", "-f", str(path)], port


def nginx_config(work, name, upstream_port):
    """nginx as a WebSocket proxy the way its documentation sets one up, one process (no
    master), no access log. None when nginx is not installed."""
    if not shutil.which("nginx"):
        return None
    port = free_port()
    prefix = work / name
    prefix.mkdir(exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(f"""daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 19500;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 19000; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream bench {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }}
    }}
}}
""")
    return ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(path)], port


def ticketgate_config(work, name, upstream_port, store, resume=False):
    """With `resume`, a 2 s window: the memory waves drop their sockets without a close frame,
    so a resume-on gate holds each for its window; a short one lets them go before RSS settles."""
    port, admin = free_port(), free_port()
    issuers = "\n".join(
        f"    - issuer: \"bench-{alg}\"\n      audiences: [\"bench\"]\n      algorithms: [{alg}]\n      "
        + KEY_FOR[alg].format(f=FIXTURES) for alg in ALGORITHMS)
    path = work / f"{name}.yaml"
    path.write_text(f"""listen: "127.0.0.1:{port}"
upstream: "127.0.0.1:{upstream_port}"
admin:
  listen: "127.0.0.1:{admin}"
threads: 1
shutdown_grace_seconds: 0
jwt:
  cache_size: {TOKEN_CACHE_SIZE}
  issuers:
{issuers}
routes:
  - prefix: /none
    auth: none
  - prefix: /ws-none
    auth: none
  - prefix: /ws
    auth: ticket
  - prefix: /stomp
    auth: ticket
    stomp:
      subscribe: ["/topic/**", "/user/{{sub}}/**"]
      send: ["/app/**", "/user/{{sub}}/**"]
  - prefix: /
    auth: jwt
tickets:
  issue_path: /ws-ticket
  ttl_seconds: 600
  secret_file: "{FIXTURES}/ticket.secret"
  store: "{store}"
access_log:
  path: "{work}/{name}-access.log"
""" + ("""websocket:
  refresh_path: /ws-refresh
  resume_window_seconds: 2
""" if resume else ""))
    return path, port


class Bench:
    def __init__(self, settings, work, only=None):
        self.s = settings
        self.only = only
        self.work = work
        self.procs = Processes(settings, work)
        self.results = {}  # scenario -> list of figure dicts, one per round

    # --- set-up -------------------------------------------------------------------------

    def start(self):
        s = self.s
        self.redis_port = free_port()
        self.procs.start("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no"], self.redis_port)
        self.upstream_port = free_port()
        self.upstream = self.procs.start("upstream", [str(s.bin / "upstream"), "--listen",
                                                      f"127.0.0.1:{self.upstream_port}"], self.upstream_port)
        self.passthrough_port = free_port()
        self.passthrough = self.start_passthrough("passthrough", self.passthrough_port)
        config, self.tg_port = ticketgate_config(self.work, "ticketgate", self.upstream_port, "memory")
        self.tg = self.procs.start("ticketgate", [str(s.bin / "ticketgate"), "run", "-c", str(config)], self.tg_port)
        config, self.tg_resume_port = ticketgate_config(self.work, "ticketgate-resume", self.upstream_port, "memory",
                                                        resume=True)
        self.tg_resume = self.procs.start("ticketgate-resume", [str(s.bin / "ticketgate"), "run", "-c", str(config)],
                                          self.tg_resume_port)
        config, self.tg_redis_port = ticketgate_config(self.work, "ticketgate-redis", self.upstream_port,
                                                       f"redis://127.0.0.1:{self.redis_port}/0")
        self.tg_redis = self.procs.start("ticketgate-redis", [str(s.bin / "ticketgate"), "run", "-c", str(config)],
                                         self.tg_redis_port)
        self.wait_until_tickets_issue(self.tg_redis_port)
        self.ws_peers = {}
        for label, make in [("HAProxy", haproxy_ws_config), ("nginx", nginx_config)]:
            peer = make(self.work, f"{label.lower()}-ws", self.upstream_port)
            if peer:
                argv, port = peer
                self.ws_peers[label] = (self.procs.start(f"{label.lower()}-ws", argv, port), port)
        self.haproxy = None
        peer = haproxy_config(self.work, self.upstream_port)
        if peer:
            config, self.haproxy_port = peer
            self.haproxy = self.procs.start("haproxy", ["haproxy", "-f", str(config)], self.haproxy_port)
        self.tokens = {}
        for alg in ALGORITHMS:
            for count in (1, DISTINCT_TOKENS):
                path = self.work / f"tokens-{alg}-{count}.txt"
                with open(path, "w") as out:
                    subprocess.run([str(s.bin / "tokens"), "--alg", alg, "--count", str(count), "--keys",
                                    str(FIXTURES), "--issuer", f"bench-{alg}"], stdout=out, check=True)
                self.tokens[(alg, count)] = path
        self.hs256_token = self.tokens[("HS256", 1)].read_text().strip()

    def start_passthrough(self, name, port):
        return self.procs.start(name, [str(self.s.bin / "passthrough"), "--listen", f"127.0.0.1:{port}",
                                       "--upstream", f"127.0.0.1:{self.upstream_port}"], port)

    def wait_until_tickets_issue(self, port):
        """The Redis store is healthy after its first ping; issuance answers 503 until then."""
        for _ in range(100):
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                  f"http://127.0.0.1:{port}/ws-ticket"], capture_output=True, text=True)
            if out.stdout == "401":
                return
            time.sleep(0.1)
        raise RuntimeError("ticketgate with the Redis store never became ready")

    # --- load ---------------------------------------------------------------------------

    def wrk(self, port, path, headers=(), tokens_file="-", method="GET"):
        argv = self.s.pin_load + ["wrk", "-t1", f"-c{self.s.http_connections}", f"-d{self.s.seconds}s",
                                  "-s", str(ROOT / "bench" / "wrk" / "bench.lua")]
        for header in headers:
            argv += ["-H", header]
        argv += [f"http://127.0.0.1:{port}{path}", "--", str(tokens_file), method]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        return {"rate": figures["requests"] / figures["seconds"], "count": figures["requests"],
                "errors": figures["errors"] + figures["non2xx"], "p50_us": figures["p50_us"],
                "p99_us": figures["p99_us"]}

    def wsload(self, port, path, mode, proc, ticket_port=None, extra=(), storm_tokens=None, in_protocol=False,
               stomp=False):
        """Runs the WebSocket load tool; the serving process's CPU is counted from its `start`."""
        argv = self.s.pin_load + [str(self.s.bin / "wsload"), "--url", f"ws://127.0.0.1:{port}{path}"]
        if ticket_port:
            argv += ["--ticket-url", f"http://127.0.0.1:{ticket_port}/ws-ticket", "--token", self.hs256_token]
        argv += list(extra) + [mode]
        if mode == "handshakes":
            argv += ["--seconds", str(self.s.seconds), "--tickets", str(self.s.tickets)]
        if mode == "echo":
            argv += ["--seconds", str(self.s.seconds), "--size", "128"] + (["--stomp"] if stomp else [])
        if mode == "storm":
            argv += ["--seconds", str(self.s.seconds), "--tokens-file", str(storm_tokens)]
            if in_protocol:
                argv.append("--bearer-in-protocol")
        tool = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        started = None
        for line in tool.stdout:
            if line.strip() == "start":
                started = cpu_seconds(proc.pid)
            elif line.startswith("{"):
                figures = json.loads(line)
        if tool.wait() != 0 or started is None:
            raise RuntimeError(f"the WebSocket load tool failed: {' '.join(argv)}")
        spent = cpu_seconds(proc.pid) - started
        figures["cpu_us"] = spent * 1e6 / figures["count"] if figures["count"] else 0
        return figures

    def measured(self, proc, load):
        """Runs `load`, adding the CPU the serving process spent per request or message."""
        before = cpu_seconds(proc.pid)
        figures = load()
        if "cpu_us" not in figures:
            spent = cpu_seconds(proc.pid) - before
            figures["cpu_us"] = spent * 1e6 / figures["count"] if figures["count"] else 0
        return figures

    def scenarios(self):
        """(name, category, serving process, load) in interleaving order."""
        s, tg, u, p = self, self.tg, self.upstream, self.passthrough
        out = [
            ("HTTP direct", "http", u, lambda: s.wrk(s.upstream_port, "/none")),
            ("HTTP Pingora passthrough", "http", p, lambda: s.wrk(s.passthrough_port, "/none")),
            ("HTTP ticketgate auth: none", "http", tg, lambda: s.wrk(s.tg_port, "/none")),
        ]
        for alg in ALGORITHMS:
            token = self.tokens[(alg, 1)].read_text().strip()
            bearer = [f"Authorization: Bearer {token}"]
            out.append((f"HTTP ticketgate auth: none, {alg} token's header", "http", tg,
                        lambda bearer=bearer: s.wrk(s.tg_port, "/none", headers=bearer)))
            out.append((f"HTTP jwt {alg}, one token", "http", tg,
                        lambda bearer=bearer: s.wrk(s.tg_port, "/api", headers=bearer)))
            out.append((f"HTTP jwt {alg}, {DISTINCT_TOKENS} tokens", "http", tg,
                        lambda alg=alg: s.wrk(s.tg_port, "/api", tokens_file=s.tokens[(alg, DISTINCT_TOKENS)])))
        if self.haproxy:
            h = self.haproxy
            out.append(("HTTP HAProxy 2.6 passthrough", "http", h, lambda: s.wrk(s.haproxy_port, "/none")))
            for alg in HAPROXY_ALGORITHMS:
                token = self.tokens[(alg, 1)].read_text().strip()
                out.append((f"HTTP HAProxy jwt_verify {alg}, one token", "http", h,
                            lambda token=token: s.wrk(s.haproxy_port, "/api",
                                                      headers=[f"Authorization: Bearer {token}"])))
                out.append((f"HTTP HAProxy jwt_verify {alg}, {DISTINCT_TOKENS} tokens", "http", h,
                            lambda alg=alg: s.wrk(s.haproxy_port, "/api",
                                                  tokens_file=s.tokens[(alg, DISTINCT_TOKENS)])))
        out += [
            ("Ticket issuance (HS256 login)", "http", tg,
             lambda: s.wrk(s.tg_port, "/ws-ticket", headers=[f"Authorization: Bearer {s.hs256_token}"],
                           method="POST")),
            ("WS handshake direct", "ws-handshake", u, lambda: s.wsload(s.upstream_port, "/ws", "handshakes", u,
                                                                       extra=["--connections", "32"])),
            ("WS handshake Pingora passthrough", "ws-handshake", p,
             lambda: s.wsload(s.passthrough_port, "/ws", "handshakes", p, extra=["--connections", "32"])),
            ("WS handshake ticketgate auth: none", "ws-handshake", tg,
             lambda: s.wsload(s.tg_port, "/ws-none", "handshakes", tg, extra=["--connections", "32"])),
            ("WS handshake ticket, memory store", "ws-handshake", tg,
             lambda: s.wsload(s.tg_port, "/ws", "handshakes", tg, ticket_port=s.tg_port, extra=["--connections", "32"])),
            ("WS handshake ticket, Redis store", "ws-handshake", self.tg_redis,
             lambda: s.wsload(s.tg_redis_port, "/ws", "handshakes", s.tg_redis, ticket_port=s.tg_redis_port,
                              extra=["--connections", "32"])),
        ]
        for label, (proc, port) in self.ws_peers.items():
            out.append((f"WS handshake {label} (WebSocket proxy)", "ws-handshake", proc,
                        lambda port=port, proc=proc: s.wsload(port, "/ws", "handshakes", proc,
                                                              extra=["--connections", "32"])))
        for alg in STORM_ALGORITHMS:
            out.append((f"WS reconnect storm, distinct {alg} logins", "ws-storm", tg,
                        lambda alg=alg: s.wsload(s.tg_port, "/ws", "storm", tg, ticket_port=s.tg_port,
                                                 extra=["--connections", "32"],
                                                 storm_tokens=s.tokens[(alg, DISTINCT_TOKENS)])))
            out.append((f"WS reconnect storm, distinct {alg} logins in Sec-WebSocket-Protocol", "ws-storm", tg,
                        lambda alg=alg: s.wsload(s.tg_port, "/ws", "storm", tg, extra=["--connections", "32"],
                                                 storm_tokens=s.tokens[(alg, DISTINCT_TOKENS)], in_protocol=True)))
        out += [
            ("WS echo direct", "ws-echo", u, lambda: s.wsload(s.upstream_port, "/ws", "echo", u, extra=["--connections", "64"])),
            ("WS echo Pingora passthrough", "ws-echo", p,
             lambda: s.wsload(s.passthrough_port, "/ws", "echo", p, extra=["--connections", "64"])),
            ("WS echo ticketgate (ticket)", "ws-echo", tg,
             lambda: s.wsload(s.tg_port, "/ws", "echo", tg, ticket_port=s.tg_port, extra=["--connections", "64"])),
            ("WS echo STOMP frames, ticket route", "ws-echo", tg,
             lambda: s.wsload(s.tg_port, "/ws", "echo", tg, ticket_port=s.tg_port, extra=["--connections", "64"],
                              stomp=True)),
            ("WS echo STOMP frames, stomp route", "ws-echo", tg,
             lambda: s.wsload(s.tg_port, "/stomp", "echo", tg, ticket_port=s.tg_port, extra=["--connections", "64"],
                              stomp=True)),
            ("WS echo ticketgate (ticket, resume on)", "ws-echo", s.tg_resume,
             lambda: s.wsload(s.tg_resume_port, "/ws", "echo", s.tg_resume, ticket_port=s.tg_resume_port,
                              extra=["--connections", "64"])),
        ]
        for label, (proc, port) in self.ws_peers.items():
            out.append((f"WS echo {label} (WebSocket proxy)", "ws-echo", proc,
                        lambda port=port, proc=proc: s.wsload(port, "/ws", "echo", proc,
                                                              extra=["--connections", "64"])))
        if self.only:
            out = [entry for entry in out if any(part in entry[0] for part in self.only)]
        return out

    def run_rounds(self):
        for round_number in range(self.s.rounds):
            for name, category, proc, load in self.scenarios():
                figures = self.measured(proc, load)
                self.results.setdefault(name, {"category": category, "rounds": []})["rounds"].append(figures)
                print(f"  round {round_number + 1}: {name}: {figures['rate']:.0f}/s, "
                      f"errors {figures['errors']}, cpu {figures['cpu_us']:.1f} us", flush=True)

    # --- memory -------------------------------------------------------------------------

    def hold_idle(self, port, path, count, ticket_port):
        """Opens `count` idle sockets and returns the running load tool (after `ready`)."""
        argv = self.s.pin_load + [str(self.s.bin / "wsload"), "--url", f"ws://127.0.0.1:{port}{path}",
                                  "--connections", str(count)]
        if ticket_port:
            argv += ["--ticket-url", f"http://127.0.0.1:{ticket_port}/ws-ticket", "--token", self.hs256_token]
        holder = subprocess.Popen(argv + ["idle"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = holder.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"the load tool did not open {count} sockets: {line!r}")
        return holder

    def settled_rss(self, pid):
        """RSS once it has not moved for a while (6 s; 2 s in a smoke run), at most 45 s.
        jemalloc gives freed pages back in steps after a delay of several seconds (its
        dirty-page decay): a shorter window mistook the first plateau, still holding the
        handshakes' freed memory, for the socket's cost."""
        window = 5 if self.s.smoke else 13
        readings = [rss_bytes(pid)]
        for _ in range(90):
            time.sleep(0.5)
            readings.append(rss_bytes(pid))
            recent = readings[-window:]
            if len(recent) == window and max(recent) - min(recent) < 256 * 1024:
                break
        return readings[-1]

    def memory(self):
        """Fresh processes, so the HTTP scenarios' high-water marks do not blur the figures."""
        out = {}
        makers = [("Pingora passthrough", self.fresh_passthrough), ("ticketgate", self.fresh_ticketgate),
                  ("ticketgate, resume on", lambda: self.fresh_ticketgate(resume=True))]
        for label, config in [("HAProxy", haproxy_ws_config), ("nginx", nginx_config)]:
            if label in self.ws_peers:
                makers.append((label, lambda label=label, config=config: self.fresh_peer(label, config)))
        shared_upstream = self.upstream_port
        for label, make in makers:
            # An upstream of its own on a port of its own: the earlier scenarios' closed
            # connections sit in TIME_WAIT towards the shared one, and with the sockets a
            # resume-on gate holds, connects to it ran out of ephemeral ports.
            self.upstream_port = free_port()
            upstream = self.procs.start(f"upstream-{len(out)}", [str(self.s.bin / "upstream"), "--listen",
                                                                 f"127.0.0.1:{self.upstream_port}"], self.upstream_port)
            proc, port, path, ticket_port = make()
            base = self.settled_rss(proc.pid)
            holder = self.hold_idle(port, path, self.s.idle_connections, ticket_port)
            loaded = self.settled_rss(proc.pid)
            holder.stdin.close()
            holder.wait()
            waves = []
            for _ in range(self.s.waves):
                holder = self.hold_idle(port, path, self.s.wave_connections, ticket_port)
                holder.stdin.close()
                holder.wait()
                waves.append(self.settled_rss(proc.pid))
            out[label] = {"base": base, "per_connection": (loaded - base) / self.s.idle_connections, "waves": waves}
            self.procs.stop(proc)
            self.procs.stop(upstream)
            print(f"  memory {label}: {out[label]['per_connection'] / 1024:.1f} KiB per idle WebSocket, "
                  f"after waves {[round(w / 2**20, 1) for w in waves]} MiB", flush=True)
        self.upstream_port = shared_upstream
        return out

    def fresh_passthrough(self):
        port = free_port()
        return self.start_passthrough("passthrough-memory", port), port, "/ws", None

    def fresh_peer(self, label, config):
        argv, port = config(self.work, f"{label.lower()}-memory", self.upstream_port)
        return self.procs.start(f"{label.lower()}-memory", argv, port), port, "/ws", None

    def fresh_ticketgate(self, resume=False):
        config, port = ticketgate_config(self.work, "ticketgate-memory", self.upstream_port, "memory", resume)
        proc = self.procs.start("ticketgate-memory", [str(self.s.bin / "ticketgate"), "run", "-c", str(config)], port)
        return proc, port, "/ws", port


# --- report ---------------------------------------------------------------------------------

def median(rounds, key):
    return statistics.median(r[key] for r in rounds)


def table(results, memory):
    rows = []
    baseline = {}
    for name, entry in results.items():
        if "Pingora passthrough" in name:
            baseline[entry["category"]] = median(entry["rounds"], "rate")
        if "direct" in name:
            baseline["direct-" + entry["category"]] = median(entry["rounds"], "rate")
    unit = {"http": "req/s", "ws-handshake": "handshakes/s", "ws-echo": "msgs/s", "ws-storm": "sockets/s"}
    for name, entry in results.items():
        rate = median(entry["rounds"], "rate")
        category = entry["category"]
        rows.append([name, f"{rate:,.0f} {unit[category]}",
                     f"{rate / baseline[category]:.2f}" if category in baseline else "",
                     f"{rate / baseline['direct-' + category]:.2f}" if "direct-" + category in baseline else "",
                     f"{median(entry['rounds'], 'p50_us') / 1000:.2f} / {median(entry['rounds'], 'p99_us') / 1000:.2f}",
                     f"{median(entry['rounds'], 'cpu_us'):.1f}"])
    header = ["scenario", "median", "× passthrough", "× direct", "p50 / p99 ms", "server CPU µs per op"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if memory:
        pt = memory["Pingora passthrough"]["per_connection"]
        lines += ["", "| memory | per idle WebSocket | × passthrough | RSS after waves 1, 2, 3 |", "|---|---|---|---|"]
        for label, m in memory.items():
            waves = ", ".join(f"{w / 2**20:.1f} MiB" for w in m["waves"])
            lines.append(f"| {label} | {m['per_connection'] / 1024:.1f} KiB | {m['per_connection'] / pt:.2f} | "
                         f"{waves} (start {m['base'] / 2**20:.1f} MiB) |")
    return "\n".join(lines)


def ratio(results, name, against):
    return median(results[name]["rounds"], "rate") / median(results[against]["rounds"], "rate")


def cpu(results, name):
    return median(results[name]["rounds"], "cpu_us")


def verification_rows(verification):
    """The cells of each row of verify.rs's Markdown tables."""
    for line in verification.splitlines():
        yield [c.strip() for c in line.strip("|").split("|")]


def cache_hit_ratios(verification):
    """algorithm -> (2 threads / 1 with their own tokens, with the same tokens), from verify.rs."""
    return {cells[0].split()[0]: (float(cells[3]), float(cells[4]))
            for cells in verification_rows(verification)
            if len(cells) == 6 and cells[0].endswith(" bytes)")}


def bare_checks(verification):
    """algorithm -> µs of the bare signature check, from verify.rs's table."""
    return {cells[0]: float(cells[1]) for cells in verification_rows(verification)
            if len(cells) > 1 and cells[0] in ALGORITHMS}


def targets(results, memory, bare, cache_hits):
    none = "HTTP ticketgate auth: none"
    checks = [("auth: none ≥ 0.97× passthrough", ratio(results, none, "HTTP Pingora passthrough"), 0.97)]
    for alg in ALGORITHMS:
        checks.append((f"jwt {alg}, one token ≥ 0.97× auth: none", ratio(results, f"HTTP jwt {alg}, one token", none), 0.97))
    for alg in ALGORITHMS:
        checks.append((f"jwt {alg}, one token ≥ 0.97× auth: none sent the same Authorization header",
                       ratio(results, f"HTTP jwt {alg}, one token", f"{none}, {alg} token's header"), 0.97))
    for alg, (own, same) in cache_hits.items():
        checks.append((f"cache hit {alg}, 2 threads / 1 thread, each thread its own tokens ≤ 1.10 "
                       f"(same tokens on both: {same:.2f})", own, -1.10))
    for alg in ALGORITHMS:
        extra = cpu(results, f"HTTP jwt {alg}, {DISTINCT_TOKENS} tokens") - cpu(results, f"HTTP jwt {alg}, one token")
        checks.append((f"verification overhead {alg}: (distinct − cached CPU) / bare check ≤ 1.15",
                       extra / bare[alg], -1.15))
    # Per-core capacity (1e6 / server CPU µs per op) on both sides: the storm's own rate is
    # bounded by the load tool's one core, which does every handshake's client half.
    passthrough_handshake = cpu(results, "WS handshake Pingora passthrough")
    for alg in STORM_ALGORITHMS:
        floor = 1e6 / (passthrough_handshake + bare[alg])
        for how, scenario in [("ticket", f"WS reconnect storm, distinct {alg} logins"),
                              ("JWT in Sec-WebSocket-Protocol",
                               f"WS reconnect storm, distinct {alg} logins in Sec-WebSocket-Protocol")]:
            checks.append((f"reconnect storm {alg} ({how}) ≥ 0.8× (passthrough upgrade + bare check): "
                           f"sockets/s per core over {floor:,.0f}", 1e6 / cpu(results, scenario) / floor, 0.8))
    haproxy_es256 = f"HTTP HAProxy jwt_verify ES256, {DISTINCT_TOKENS} tokens"
    if haproxy_es256 in results:
        for how, scenario in [("ticket", "WS reconnect storm, distinct ES256 logins"),
                              ("JWT in Sec-WebSocket-Protocol",
                               "WS reconnect storm, distinct ES256 logins in Sec-WebSocket-Protocol")]:
            checks.append((f"reconnect storm ES256 ({how}) ahead of HAProxy's distinct ES256 jwt_verify, per core",
                           cpu(results, haproxy_es256) / cpu(results, scenario), 1.0))
    checks += [
        ("ticket handshake (memory) ≥ 0.9× auth: none handshake",
         ratio(results, "WS handshake ticket, memory store", "WS handshake ticketgate auth: none"), 0.9),
        ("ticket handshake (Redis) ≥ 0.8× auth: none handshake",
         ratio(results, "WS handshake ticket, Redis store", "WS handshake ticketgate auth: none"), 0.8),
        ("ticket issuance ≥ 0.9× HS256 JWT route",
         ratio(results, "Ticket issuance (HS256 login)", "HTTP jwt HS256, one token"), 0.9),
        ("echo ≥ 0.97× passthrough", ratio(results, "WS echo ticketgate (ticket)", "WS echo Pingora passthrough"), 0.97),
    ]
    echo = "WS echo ticketgate (ticket)"
    if "WS echo STOMP frames, stomp route" in results:
        checks.append(("STOMP echo: CPU per message ≤ 1.05× the ticket route's",
                       median(results["WS echo STOMP frames, stomp route"]["rounds"], "cpu_us")
                       / median(results["WS echo STOMP frames, ticket route"]["rounds"], "cpu_us"), -1.05))
    if "WS echo ticketgate (ticket, resume on)" in results:
        checks.append(("echo, resume on, ≥ 1.0× passthrough",
                       ratio(results, "WS echo ticketgate (ticket, resume on)", "WS echo Pingora passthrough"), 1.0))
    if "WS echo nginx (WebSocket proxy)" in results:
        checks.append(("echo ≥ 0.9× nginx", ratio(results, echo, "WS echo nginx (WebSocket proxy)"), 0.9))
    if memory:
        checks.append(("idle WebSocket memory ≤ 0.5× passthrough",
                       memory["ticketgate"]["per_connection"] / memory["Pingora passthrough"]["per_connection"], None))
        kib = memory["ticketgate"]["per_connection"] / 1024
        checks.append(("idle relayed WebSocket ≤ 20 KiB (KiB)", kib, -20.0))
        if "ticketgate, resume on" in memory:
            kib = memory["ticketgate, resume on"]["per_connection"] / 1024
            checks.append(("idle relayed WebSocket, resume on, ≤ 24 KiB (KiB)", kib, -24.0))
        for peer in ("HAProxy", "nginx"):
            if peer in memory:
                checks.append((f"idle WebSocket memory below {peer}'s (ticketgate / {peer})",
                               memory["ticketgate"]["per_connection"] / memory[peer]["per_connection"], -1.0))
    lines = ["| target | measured | met |", "|---|---|---|"]
    # A negative floor is a ceiling: the value must not exceed it.
    for label, value, floor in checks:
        if floor is None:
            met = value <= 0.5
        elif floor < 0:
            met = value <= -floor
        else:
            met = value >= floor
        lines.append(f"| {label} | {value:.2f} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def machine():
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return f"{os.cpu_count()} × {model}, {int(memory) // 2**20} GiB, Linux {platform.release()}"


def check_smoke(results, memory):
    problems = []
    for name, entry in results.items():
        for figures in entry["rounds"]:
            if not figures["count"] > 0:
                problems.append(f"{name}: no operations")
            if figures["errors"]:
                problems.append(f"{name}: {figures['errors']} errors")
    for label, m in memory.items():
        if not m["waves"] or m["per_connection"] <= 0:
            problems.append(f"memory {label}: no figures")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--profile", default="release")
    parser.add_argument("--only", help="comma-separated parts of scenario names to run, `stores` for the "
                        "ticket-store table, `tls` for the TLS table, `storm` for the admission storm (for development; "
                        "BENCHMARKS.md is then not written)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory scenarios")
    args = parser.parse_args()
    settings = Settings(args.smoke, args.profile)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    with tempfile.TemporaryDirectory(prefix="ticketgate-bench-") as work:
        only = args.only.split(",") if args.only else None
        bench = Bench(settings, Path(work), only)
        started = time.time()
        try:
            bench.start()
            print(f"bench: {settings.rounds} round(s) of {len(bench.scenarios())} scenarios, "
                  f"{settings.seconds:g} s each", flush=True)
            bench.run_rounds()
            memory = {} if args.no_memory else bench.memory()
        finally:
            bench.procs.stop_all()
        report = table(bench.results, memory)
        verification = ""
        if not only:
            # Not pinned: its cache-hit table runs two threads at once.
            verification = subprocess.run([str(settings.bin / "verify")], check=True,
                                          capture_output=True, text=True).stdout.rstrip()
        goals = "" if only else targets(bench.results, memory, bare_checks(verification),
                                          cache_hit_ratios(verification))
        print("\n" + report + "\n\n" + goals)
        print(f"\nbench took {time.time() - started:.0f} s")
        stores, store_failures = "", 0
        if not only or "stores" in only:
            stores, store_failures = store_bench.table(settings.bin / "store", settings.seconds)
            print(stores)
        handshakes, tls_failures = "", 0
        if not only or "tls" in only:
            handshakes, tls_failures = tls_bench.table(settings.bin, settings.seconds, settings.rounds)
            print(handshakes)
        storms, storm_problems = "", []
        if not only or "storm" in only:
            storms, storm_problems, _ = storm_bench.run(settings.bin, settings.smoke)
            print(storms)
        if settings.smoke:
            problems = check_smoke(bench.results, memory) + [f"storm: {p}" for p in storm_problems]
            if store_failures:
                problems.append(f"ticket stores: {store_failures} failed redemptions")
            if tls_failures:
                problems.append(f"TLS: {tls_failures} failed connections")
            for problem in problems:
                print(f"smoke: {problem}", file=sys.stderr)
            print(f"smoke: {len(bench.results) + len(memory) + 3 - len(problems)} passed, {len(problems)} failed")
            sys.exit(1 if problems else 0)
        if only:
            return
        frames = subprocess.run([str(settings.bin / "frames")], check=True, capture_output=True,
                                text=True).stdout.rstrip()
        print(frames)
        print(verification)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        (ROOT / "BENCHMARKS.md").write_text(f"""# Benchmarks

Command: `bench/run.sh` ({settings.rounds} interleaved rounds of {settings.seconds:g} s per scenario;
medians). Date: {now}. Machine: {machine()}.
Proxies and upstream pinned to CPU 1, the load generators (wrk -t1 -c64; the Rust WebSocket
tool) to CPU 0. Ratios are against the plain Pingora passthrough and the upstream reached
directly, measured in the same run. "server CPU" is the CPU time of the process serving the
scenario (proxy, or the upstream for direct) per request, handshake or message.

Ticket handshakes: each connection uses its own fresh ticket, fetched before the timed phase
(issuance is measured on its own row). A reconnect storm is 32 "browsers" each with its own
login from {DISTINCT_TOKENS:,} distinct JWTs: either a ticket bought with it on a fresh
connection, then the upgrade, or (`in Sec-WebSocket-Protocol`) the upgrade alone with the JWT
offered as `ticketgate.bearer.<JWT>`. Its rate is bounded by the load tool's one core, so the
targets compare per-core capacity, 1,000,000 / server CPU µs per socket. JWT rotation uses {DISTINCT_TOKENS:,} distinct tokens
against a {TOKEN_CACHE_SIZE:,}-entry token cache, so it measures full verification.

{report}

## Targets

{goals}

## Verifying one token, layer by layer

`bench/src/bin/verify.rs`, over 2,000 distinct tokens per algorithm (best of three passes),
with nothing else running: the bare signature check with the public key parsed once (aws-lc-rs), the same
check parsing the key on every call (what jsonwebtoken's aws-lc backend does),
`jsonwebtoken::decode` with the issuer's validation, and ticketgate's whole miss path
(its keys parsed once at load; header, issuer, keys, signature, claims in one pass, rules,
identity). What "miss / bare" has beyond 1.00 is
what a distinct token costs beyond its signature; the last column adds building the
forwarded headers and inserting into a full cache, as a reconnect storm does. The second table is a cache hit
(`TokenCache::cached`, the path of every repeated token) with one thread, and with two
threads on the two cores hitting the one cache at once, either each with tokens of its own
(different callers' connections, the common case) or both with the same tokens (one caller
on both workers, so both write the count of the one entry's `Arc`). The last column is a
control that writes nothing shared (a `HashMap` of the tokens read by both threads), what
two threads cost each other on this machine without any cache.

{verification}

## Following the upstream's frames (live sessions)

`bench/src/bin/frames.rs`: what tracking the server-to-client frame boundaries costs per
message, so that a close frame (4401, 4403, 1001) never lands inside one. Compare with the
echo rows' server CPU per message above.

```
{frames}
```

## Ticket stores

`bench/store.py` (`bench/src/bin/store.rs`): ticketgate's Redis store redeeming fresh ids on
one thread with 32 redemptions in flight (as one Pingora worker; some rows one), against
each topology on loopback. Every Redis process shares CPU 1, the client is on CPU 0: the
figures compare topologies on one machine; real ones add the network's round trip.

{stores}

## Admission: a reconnect storm

`bench/storm.py` (`bench/src/bin/storm.rs`): {storm_bench.Shape(False).browsers:,} browsers, each with its
own RS256 login, behaving as the browser helper (ticket, `connect_after_ms`, full-jitter
backoff, never before a `Retry-After`), open sockets through {storm_bench.Shape(False).replicas} ticketgate replicas sharing
one Redis (this machine allows 20,000 open files per process; a proxy holds two per
socket) to one upstream service ({storm_bench.Shape(False).upstreams} processes on one port). Then the upstream is killed
and restarted, or one replica is killed, and every browser reconnects within its first
backoff; the last storm has no `admission:`. Budget per replica: {storm_bench.Shape(False).upgrades_per_replica} upgrades and
{storm_bench.Shape(False).upgrades_per_replica} tickets a second, `retry_after_seconds: {storm_bench.Shape(False).retry_after}`. Upstream accepts are counted by the
upstream; reconnect times run from each browser's close to its socket open again. Servers
on CPU 1, browsers on CPU 0. The CPU rows: one replica answering keep-alive ticket requests
with distinct logins for {storm_bench.Shape(False).cpu_seconds:g} s, all issued (no budget), all refused (a budget of
one a second), and all 404 (a path no route serves: the HTTP floor every request pays).

{storms}

## TLS connections, per backend

`bench/tls.py` (`bench/src/bin/handshakes.rs`, and `bench/tls-openssl` for Pingora's openssl
backend): each connection a full TLS 1.3 handshake, one GET the server answers itself (404)
and a close, 16 clients on CPU 0, the server alone on CPU 1. "server CPU" is the server
process's CPU time per connection; the ratio is against ticketgate's row with the same
certificate.

{handshakes}
""")
        print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
