#!/usr/bin/env python3
"""What a TLS connection costs the server, per TLS backend.

ticketgate terminates TLS with Pingora's rustls backend (aws-lc-rs crypto). Beside it, the
same handshake served by Pingora's `openssl` backend (`bench/tls-openssl`, Debian's OpenSSL
3.0) and by HAProxy (OpenSSL as well), each with an ECDSA P-256 and an RSA-2048 certificate.
Each server is pinned to CPU 1, the client (`bench/src/bin/handshakes.rs`) to CPU 0: every
connection is a full TLS 1.3 handshake (no resumption; one row resumes, to show what a
reconnecting browser costs), one GET the server answers itself (404) and a close. Prints a Markdown table: connections/s, the server's CPU per connection
(from /proc, over the timed phase only), and the client's p50. bench/run.py includes it in
BENCHMARKS.md; on its own:

    cargo build --release -p ticketgate -p ticketgate-bench --bins
    cargo build --release --manifest-path bench/tls-openssl/Cargo.toml --target-dir target/tls-openssl
    python3 bench/tls.py
"""

import json
import os
import shutil
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


def wait_for_port(port, deadline=20.0):
    end = time.time() + deadline
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"tls bench: nothing listens on {port}")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def pki(work, kind):
    """A CA and a server certificate for localhost signed by it; `kind` is ec or rsa."""
    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else \
        ["-newkey", "rsa:2048"]
    ca, ca_key = work / f"{kind}-ca.pem", work / f"{kind}-ca.key"
    cert, key, csr = work / f"{kind}.pem", work / f"{kind}.key", work / f"{kind}.csr"
    openssl("req", "-x509", *key_args, "-nodes", "-days", "2", "-subj", "/CN=bench CA",
            "-keyout", str(ca_key), "-out", str(ca))
    openssl("req", "-new", *key_args, "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    ext = work / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(cert))
    combined = work / f"{kind}-combined.pem"
    combined.write_text(cert.read_text() + key.read_text())
    return {"ca": ca, "cert": cert, "key": key, "combined": combined}


def ticketgate(bin_dir, work, files):
    port, admin = free_port(), free_port()
    config = work / f"ticketgate-{files['cert'].stem}.yaml"
    config.write_text(f"""listen: "127.0.0.1:{port}"
upstream: "127.0.0.1:9"
admin:
  listen: "127.0.0.1:{admin}"
threads: 1
routes:
  - prefix: /public
    auth: none
access_log:
  path: "{work}/access.log"
tls:
  cert_file: "{files['cert']}"
  key_file: "{files['key']}"
""")
    return [str(bin_dir / "ticketgate"), "run", "--config", str(config)], port


def pingora_openssl(binary, files):
    port = free_port()
    return [str(binary), f"127.0.0.1:{port}", str(files["cert"]), str(files["key"])], port


def haproxy(work, files):
    port = free_port()
    config = work / f"haproxy-{files['cert'].stem}.cfg"
    config.write_text(f"""global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tls
    bind 127.0.0.1:{port} ssl crt {files['combined']}
    http-request return status 404
""")
    return ["haproxy", "-f", str(config)], port


def measure(handshakes, server, port, ca, seconds, resume=False):
    """The client's figures with the server's CPU µs per connection over the timed phase."""
    proc = subprocess.Popen([*pinned(1), *server], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        client = subprocess.Popen([*pinned(0), str(handshakes), "--port", str(port), "--ca", str(ca),
                                   "--seconds", str(seconds), *(["--resume"] if resume else [])],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        marker = client.stderr.readline()
        before = cpu_seconds(proc.pid)
        out, err = client.communicate(timeout=seconds + 60)
        used = cpu_seconds(proc.pid) - before
        if client.returncode != 0 or "timed phase" not in marker:
            raise SystemExit(f"tls bench: the client failed: {marker}{err}")
        figures = json.loads(out.strip().splitlines()[-1])
        figures["cpu_us"] = used / figures["connections"] * 1e6 if figures["connections"] else 0
        return figures
    finally:
        proc.kill()
        proc.wait(timeout=10)


def table(bin_dir, seconds=4.0, rounds=3):
    """The Markdown table, and the failed connections in all."""
    openssl_server = ROOT / "target" / "tls-openssl" / bin_dir.name / "tls-openssl"
    with tempfile.TemporaryDirectory(prefix="ticketgate-tls-bench-") as work:
        work = Path(work)
        lines = ["| server | certificate | connections/s | server CPU µs / connection | ratio to ticketgate | client p50 µs | failures |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        failures = 0
        for kind, label in [("ec", "ECDSA P-256"), ("rsa", "RSA-2048")]:
            files = pki(work, kind)
            gate = ticketgate(bin_dir, work, files)
            servers = [("ticketgate (Pingora rustls, aws-lc-rs)", gate, False),
                       ("Pingora openssl backend (OpenSSL 3.0)", pingora_openssl(openssl_server, files), False)]
            if shutil.which("haproxy"):
                servers.append(("HAProxy 2.6 (OpenSSL 3.0)", haproxy(work, files), False))
            servers.append(("ticketgate, clients resuming their sessions", gate, True))
            runs = {name: [] for name, _, _ in servers}
            for _ in range(rounds):
                for name, (argv, port), resume in servers:
                    runs[name].append(measure(bin_dir / "handshakes", argv, port, files["ca"], seconds, resume))
            ours = None
            for name, _, _ in servers:
                median = sorted(runs[name], key=lambda f: f["cpu_us"])[len(runs[name]) // 2]
                failures += sum(f["failures"] for f in runs[name]) + (0 if median["connections"] else 1)
                ours = ours or median["cpu_us"]
                ratio = median["cpu_us"] / ours if ours else 0
                lines.append(f"| {name} | {label} | {median['per_second']:,.0f} | {median['cpu_us']:.0f} | "
                             f"{ratio:.2f} | {median['p50_us']} | {median['failures']} |")
        return "\n".join(lines), failures


if __name__ == "__main__":
    profile = sys.argv[1] if len(sys.argv) > 1 else "release"
    print(table(ROOT / "target" / profile)[0])
