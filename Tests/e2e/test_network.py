"""The agent's network namespace: only loopback, where the proxy listens. Isolation is read from
inside the sandbox and probed only against listeners this test opens on this machine."""

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import uuid

from conftest import MG_RUN, run_mg

POLICY = 'rules:\n  - action: "llm:*"\n'

PROBE = r"""
import json, os, socket, sys, urllib.request
probes = json.loads(sys.argv[1])
result = {"interfaces": [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]],
          "routes": open("/proc/net/route").read().splitlines()[1:]}
try:
    request = urllib.request.Request(os.environ["MG_RUN_URL"] + "/v1/models", headers={"Authorization": "Bearer " + os.environ["MG_RUN_TOKEN"]})
    result["proxy"] = urllib.request.urlopen(request, timeout=5).status
except OSError as error:
    result["proxy"] = str(error)
def reach(family, address):
    probe = socket.socket(family, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(address)
        return True
    except OSError:
        return False
    finally:
        probe.close()
result["tcp4"] = reach(socket.AF_INET, ("127.0.0.1", probes["tcp4"]))
result["tcp6"] = reach(socket.AF_INET6, ("::1", probes["tcp6"])) if probes["tcp6"] else None
result["abstract"] = reach(socket.AF_UNIX, "\0" + probes["abstract"])
result["run_socket"] = reach(socket.AF_UNIX, probes["run_socket"])
print(json.dumps(result))
"""


def open_listeners():
    """Listeners on the host side: TCP on 127.0.0.1 and ::1, an abstract Unix socket, a socket file under /run."""
    listeners = []
    tcp4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp4.bind(("127.0.0.1", 0))
    tcp4.listen()
    listeners.append(tcp4)
    tcp6_port = 0
    if socket.has_ipv6:
        try:
            tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            tcp6.bind(("::1", 0))
            tcp6.listen()
            listeners.append(tcp6)
            tcp6_port = tcp6.getsockname()[1]
        except OSError:
            pass
    name = "mg-run-test-" + uuid.uuid4().hex
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + name)
    abstract.listen()
    listeners.append(abstract)
    path = f"/run/{name}.sock"
    run_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    run_socket.bind(path)
    run_socket.listen()
    listeners.append(run_socket)
    probes = {"tcp4": tcp4.getsockname()[1], "tcp6": tcp6_port, "abstract": name, "run_socket": path}
    return listeners, probes, path


def probe(tmp_path, *options):
    listeners, probes, path = open_listeners()
    try:
        # The host can reach its own listeners, so an unreachable one inside means the sandbox.
        assert socket.create_connection(("127.0.0.1", probes["tcp4"]), timeout=2)
        script = tmp_path / "probe.py"
        script.write_text(PROBE)
        command = [MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate", *options,
                   "--", sys.executable, str(script), json.dumps(probes)]
        (tmp_path / "policy.yaml").write_text(POLICY)
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout), completed.stderr
    finally:
        for listener in listeners:
            listener.close()
        os.unlink(path)


def test_proxy_only_reaches_nothing_but_the_proxy(tmp_path):
    seen, _ = probe(tmp_path)
    assert seen["interfaces"] == ["lo"]
    assert seen["routes"] == []
    assert seen["proxy"] == 200
    assert seen["tcp4"] is False
    assert seen["tcp6"] in (False, None)
    assert seen["abstract"] is False
    assert seen["run_socket"] is False


def test_network_none_has_no_proxy_either(tmp_path):
    seen, _ = probe(tmp_path, "--network", "none")
    assert seen["interfaces"] == ["lo"]
    assert seen["proxy"] != 200
    assert seen["tcp4"] is False


def test_network_host_warns_and_reaches_host(tmp_path):
    seen, stderr = probe(tmp_path, "--network", "host")
    assert "network host: the agent can reach the network directly" in stderr
    assert seen["proxy"] == 200
    assert seen["tcp4"] is True
    assert len(seen["interfaces"]) >= 1


def test_invalid_network_names_choices(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    result = subprocess.run([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--network", "open", "--", "true"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid --network 'open'; use proxy_only (default), none or host" in result.stderr


LIMITED = r"""
import json, resource
opened = []
try:
    for _ in range(100):
        opened.append(open("/dev/null"))
except OSError:
    pass
try:
    block = bytearray(200 * 1024 * 1024)
    allocated = True
except MemoryError:
    allocated = False
print(json.dumps({"opened": len(opened), "allocated": allocated, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))
"""


def test_run_section_sets_rlimits_and_network(tmp_path):
    policy = 'run:\n  sandbox:\n    network: none\n    rlimits: {open_files: 32, memory_mb: 150}\nrules:\n  - action: "llm:*"\n'
    (tmp_path / "policy.yaml").write_text(policy)
    script = tmp_path / "limited.py"
    script.write_text(LIMITED)
    completed = subprocess.run([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate", "--", sys.executable, str(script)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout)
    assert seen["nofile"] == 32
    assert seen["opened"] < 32
    assert seen["allocated"] is False
    assert "network=none" in completed.stderr


def test_run_max_duration_stops_the_run(tmp_path):
    policy = 'run:\n  max_duration: 1s\n  kill_grace_seconds: 1\nrules:\n  - action: "llm:*"\n'
    (tmp_path / "policy.yaml").write_text(policy)
    completed = subprocess.run([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate", "--", "sleep", "30"],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 124


EGRESS_POLICY = """
allowed_domains: [docs.example.test]
rules:
  - action: "llm:*"
  - action: "api:external:*"
    conditions: ["request.domain in allowed_domains"]
"""

EGRESS_AGENT = r"""
import http.client, json, os, sys, urllib.request, urllib.error
port = int(sys.argv[1])
seen = {}
try:
    seen["allowed"] = urllib.request.urlopen(f"http://docs.example.test:{port}/page", timeout=10).read().decode()
except urllib.error.HTTPError as error:
    seen["allowed"] = error.code
try:
    urllib.request.urlopen(f"http://blocked.example.test:{port}/page", timeout=10)
    seen["blocked"] = "reached"
except urllib.error.HTTPError as error:
    seen["blocked"] = error.code
proxy_host, proxy_port = os.environ["HTTPS_PROXY"].removeprefix("http://").split(":")
tunnel = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=10)
tunnel.set_tunnel("docs.example.test", port)
tunnel.request("GET", "/tunneled")
seen["tunnel"] = tunnel.getresponse().read().decode()
print(json.dumps(seen))
"""


@contextlib.contextmanager
def page_server(protocol_version="HTTP/1.0"):
    """Serves `page <path>` for every GET on a loopback port; yields the port and the list of paths requested."""
    paths = []

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            paths.append(self.path)
            body = f"page {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    Page.protocol_version = protocol_version
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()


def test_egress_proxy_allows_listed_hosts_only(tmp_path):
    with page_server() as (port, _):
        (tmp_path / "policy.yaml").write_text(EGRESS_POLICY)
        script = tmp_path / "egress.py"
        script.write_text(EGRESS_AGENT)
        resolve = f"docs.example.test:{port}:127.0.0.1,blocked.example.test:{port}:127.0.0.1"
        completed = subprocess.run([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate",
                                    "--audit", str(tmp_path / "audit.jsonl"), "--", sys.executable, str(script), str(port)],
                                   capture_output=True, text=True, timeout=60, env={**os.environ, "MG_RUN_RESOLVE": resolve})
        assert completed.returncode == 0, completed.stderr
        seen = json.loads(completed.stdout)
        assert seen["allowed"] == "page /page"
        assert seen["blocked"] == 403
        assert seen["tunnel"] == "page /tunneled"
        audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        external = [(line["action"], line["decision"]) for line in audit if line["action"].startswith("api:external:")]
        assert external == [("api:external:docs.example.test", "allow"), ("api:external:blocked.example.test", "deny"),
                            ("api:external:docs.example.test", "allow")]


WRITE_PROBE = r"""
import json, sys
seen = {}
for path in sys.argv[1:]:
    try:
        with open(path, "a") as target:
            target.write("")
        seen[path] = "writable"
    except OSError:
        seen[path] = "read-only"
print(json.dumps(seen))
"""


def test_agent_cannot_write_system_or_run_files(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    script = tmp_path / "write.py"
    script.write_text(WRITE_PROBE)
    ledger = tmp_path / "ledger.sqlite"
    audit = tmp_path / "audit.jsonl"
    cgroup = "/sys/fs/cgroup/unified/cgroup.procs" if os.path.exists("/sys/fs/cgroup/unified/cgroup.procs") else "/sys/fs/cgroup/cgroup.procs"
    targets = [str(ledger), str(audit), str(tmp_path / "policy.yaml"), "/etc/hostname", "/usr/bin/env", cgroup, str(tmp_path / "scratch.txt")]
    completed = subprocess.run([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate", "--ledger", str(ledger),
                                "--audit", str(audit), "--", sys.executable, str(script), *targets], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout)
    assert [seen[target] for target in targets[:-1]] == ["read-only"] * 6
    # Its own working files stay writable.
    assert seen[str(tmp_path / "scratch.txt")] == "writable"


def test_network_option_cannot_loosen_policy(tmp_path):
    (tmp_path / "policy.yaml").write_text('run:\n  sandbox:\n    network: none\nrules:\n  - action: "llm:*"\n')
    completed = subprocess.run([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate", "--network", "host", "--", "true"],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "network=none" in completed.stderr


PIPELINE_AGENT = r"""
import os, socket, sys
port = int(sys.argv[1])
host, proxy_port = os.environ["HTTP_PROXY"].removeprefix("http://").split(":")
connection = socket.create_connection((host, int(proxy_port)), timeout=10)
first = f"GET http://docs.example.test:{port}/first HTTP/1.1\r\nHost: docs.example.test\r\n\r\n"
second = f"GET /second HTTP/1.1\r\nHost: evil.example.test\r\n\r\n"
connection.sendall((first + second).encode())
data = b""
while True:
    chunk = connection.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace").count("HTTP/1."))
"""


def test_egress_proxy_takes_one_request_per_connection(tmp_path):
    # HTTP/1.1 keeps the upstream connection open, so a second request the proxy passed on would be served.
    with page_server("HTTP/1.1") as (port, paths):
        (tmp_path / "policy.yaml").write_text(EGRESS_POLICY)
        script = tmp_path / "pipeline.py"
        script.write_text(PIPELINE_AGENT)
        completed = subprocess.run([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate", "--", sys.executable, str(script), str(port)],
                                   capture_output=True, text=True, timeout=60, env={**os.environ, "MG_RUN_RESOLVE": f"docs.example.test:{port}:127.0.0.1"})
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.strip() == "1"
        assert paths == ["/first"]
