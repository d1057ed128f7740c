"""Stopping the run, the run token, policy errors and client disconnects, end to end."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from conftest import MG_RUN, ROOT, run_mg


def marker_processes(marker):
    """Host PIDs whose command line contains the marker."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_runaway_stopped_with_its_setsid_crawler(tmp_path):
    marker = f"runaway-crawler-{os.getpid()}-{time.monotonic_ns()}"
    command = [MG_RUN, "--policy", str(ROOT / "profiles/basic.yaml"), "--upstream", "simulate", "--simulate-latency-ms", "20",
               "--summary", str(tmp_path / "summary.json"), "--", sys.executable, str(ROOT / "examples/runaway_research.py")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "RUNAWAY_MARKER": marker})
    first_line = process.stdout.readline()
    assert first_line.startswith("runaway: started crawler"), first_line
    crawler_seen = marker_processes(marker) != []
    stop_seen = None
    for line in process.stderr:
        if "stop decided" in line:
            stop_seen = time.monotonic()
            break
    assert stop_seen is not None, "mg-run never decided to stop the runaway"
    assert crawler_seen, "the runaway's crawler never started"
    while marker_processes(marker) and time.monotonic() - stop_seen < 1.0:
        time.sleep(0.01)
    assert marker_processes(marker) == [], "the setsid crawler outlived the stop by more than 1 s"
    process.communicate(timeout=30)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["outcome"] == "stopped"
    assert summary["stop_reason"] == "cost_ceiling:max_usd_per_task"
    assert process.returncode == 125
    assert summary["cost_usd"] <= 1.00


def test_max_duration_stops_the_run(tmp_path):
    started = time.monotonic()
    result = run_mg(tmp_path, "rules: [{action: 'llm:*'}]\n", "import time\ntime.sleep(60)\n", "--upstream", "simulate", "--max-duration", "1s")
    assert time.monotonic() - started < 10
    assert result.returncode == 124
    assert result.summary["outcome"] == "stopped"
    assert result.summary["stop_reason"] == "max_duration"


def test_sigterm_ignoring_agent_killed_after_grace(tmp_path):
    agent = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    started = time.monotonic()
    result = run_mg(tmp_path, "rules: [{action: 'llm:*'}]\n", agent, "--upstream", "simulate", "--max-duration", "1s", "--kill-grace", "1")
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 8, elapsed
    assert result.returncode == 124


def test_child_exit_status_passed_through(tmp_path):
    result = run_mg(tmp_path, "rules: [{action: 'llm:*'}]\n", "import sys\nsys.exit(7)\n", "--upstream", "simulate")
    assert result.returncode == 7
    assert result.summary["outcome"] == "failed"
    assert result.summary["exit_status"] == 7


TOKEN_AGENT = """
import json, os, urllib.request, urllib.error
url = os.environ["MG_RUN_URL"]
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
results = {}
for name, headers in {"none": {}, "wrong": {"Authorization": "Bearer sk-real-looking"},
                      "anthropic_wrong": {"x-api-key": "nope", "anthropic-version": "2023-06-01"},
                      "good": {"Authorization": "Bearer " + os.environ["MG_RUN_TOKEN"]}}.items():
    path = "/v1/messages" if name.startswith("anthropic") else "/v1/chat/completions"
    request = urllib.request.Request(url + path, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request) as response:
            results[name] = [response.status, None]
    except urllib.error.HTTPError as error:
        results[name] = [error.code, json.loads(error.read())]
request = urllib.request.Request(url + "/v1/files", headers={"Authorization": "Bearer " + os.environ["MG_RUN_TOKEN"]})
try:
    urllib.request.urlopen(request)
except urllib.error.HTTPError as error:
    results["unknown_path"] = [error.code, json.loads(error.read())]
results["keys"] = [os.environ["OPENAI_API_KEY"] == os.environ["MG_RUN_TOKEN"], os.environ["ANTHROPIC_API_KEY"] == os.environ["MG_RUN_TOKEN"]]
print(json.dumps(results))
"""


def test_requests_without_run_token_get_401(tmp_path):
    result = run_mg(tmp_path, "rules: [{action: 'llm:*'}]\n", TOKEN_AGENT, "--upstream", "simulate",
                    env={"OPENAI_API_KEY": "sk-real-secret-key", "ANTHROPIC_API_KEY": "sk-ant-real-secret"})
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert results["none"][0] == 401
    assert results["none"][1]["error"]["code"] == "invalid_api_key"
    assert results["wrong"][0] == 401
    assert results["anthropic_wrong"][0] == 401
    assert results["anthropic_wrong"][1]["type"] == "error"
    assert results["anthropic_wrong"][1]["error"]["type"] == "authentication_error"
    assert results["good"][0] == 200
    assert results["unknown_path"][0] == 404
    assert results["unknown_path"][1]["error"]["code"] == "unknown_url"
    assert results["keys"] == [True, True]
    assert "sk-real-secret-key" not in result.stdout
    denied = [line for line in result.audit if line["decision"] == "deny"]
    assert [line["status"] for line in denied] == [401, 401, 401, 404]


def test_policy_errors_name_position_and_path(tmp_path):
    policy = tmp_path / "bad.yaml"
    policy.write_text("rules:\n  - action: 'llm:*'\n    rate_limit:\n      max_per_minit: 5\n      max_per_hour: '10'\n"
                      "      max_per_hour: 3\n    conditions: ['x']\n")
    result = subprocess.run([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--", "true"], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"mg-run: error: {policy}:4:7: rules[0].rate_limit: unknown key 'max_per_minit' (did you mean 'max_per_minute'?)"
    assert lines[1] == f"{policy}:5:21: rules[0].rate_limit.max_per_hour: expected a non-negative whole number, got the quoted string \"10\"; remove the quotes"
    assert lines[2] == f"{policy}:6:7: rules[0].rate_limit: duplicate key 'max_per_hour' (first at line 5); remove one of them"
    assert lines[3].startswith(f"{policy}:7:19: rules[0].conditions[0]: unknown identifier 'x'")


def test_missing_key_suggests_simulate(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("rules: [{action: 'llm:*'}]\n")
    env = {key: value for key, value in os.environ.items() if key not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    result = subprocess.run([MG_RUN, "--policy", str(policy), "--", "true"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr
    assert "--upstream simulate" in result.stderr


DISCONNECT_AGENT = """
import json, os, socket, urllib.parse, urllib.request
url = os.environ["MG_RUN_URL"]
token = os.environ["MG_RUN_TOKEN"]
request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tell me a long story"}]}
full = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(request).encode(),
                              headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
with urllib.request.urlopen(full) as response:
    usage = json.load(response)["usage"]
# The same request, streamed, and cut after the first few events.
host, port = urllib.parse.urlsplit(url).netloc.split(":")
body = json.dumps({**request, "stream": True}).encode()
connection = socket.create_connection((host, int(port)))
connection.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
                   b"Authorization: Bearer " + token.encode() + b"\\r\\nContent-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)
received = b""
while received.count(b"data:") < 3:
    received += connection.recv(4096)
connection.close()
print(json.dumps(usage))
"""


def test_client_disconnect_still_charged(tmp_path):
    result = run_mg(tmp_path, "rules: [{action: 'llm:*'}]\n", DISCONNECT_AGENT, "--upstream", "simulate", "--simulate-event-delay-ms", "20")
    assert result.returncode == 0, result.stderr
    usage = json.loads(result.stdout)
    assert len(result.audit) == 2, result.audit
    cut = result.audit[1]
    assert cut["reason"] == "client disconnected before the end of the stream"
    assert cut["input_tokens"] == usage["prompt_tokens"]
    assert cut["output_tokens"] == usage["completion_tokens"]
    assert cut["cost_usd"] == result.audit[0]["cost_usd"]
    assert result.summary["calls"] == 2


PROC_SCAN_AGENT = """
import pathlib
found = []
for entry in pathlib.Path("/proc").iterdir():
    try:
        if b"sk-real-secret-key" in (entry / "environ").read_bytes():
            found.append(entry.name)
    except OSError:
        pass
print(found)
"""


def test_real_key_not_in_any_environ(tmp_path):
    result = run_mg(tmp_path, "rules: [{action: 'llm:*'}]\n", PROC_SCAN_AGENT, "--upstream", "openai=http://127.0.0.1:9/v1",
                    env={"OPENAI_API_KEY": "sk-real-secret-key"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_agent_sees_only_its_own_processes(tmp_path):
    # A shell with the key in its environment stays mg-run's parent. The agent's /proc must not list it.
    policy = tmp_path / "p.yaml"
    policy.write_text("rules: [{action: 'llm:*'}]\n")
    agent = tmp_path / "agent.py"
    agent.write_text(PROC_SCAN_AGENT + "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n")
    command = ["sh", "-c", '"$@"; exit $?', "sh", MG_RUN, "--policy", str(policy), "--upstream", "openai=http://127.0.0.1:9/v1",
               "--", sys.executable, str(agent)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OPENAI_API_KEY": "sk-real-secret-key"})
    assert result.returncode == 0, result.stderr
    found, pids = result.stdout.strip().splitlines()
    assert found == "[]"
    # The namespace's init is 1 and the agent 2; nothing of the host is listed.
    assert json.loads(pids) == [1, 2]


def test_policy_without_rules_rejected(tmp_path):
    policy = tmp_path / "empty.yaml"
    policy.write_text("name: nothing\n")
    result = subprocess.run([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--", "true"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no rules in" in result.stderr


LARGE_BODY_AGENT = """
import json, os, socket, urllib.parse
url = os.environ["MG_RUN_URL"]
host, port = urllib.parse.urlsplit(url).netloc.split(":")

def status_for(headers):
    # Announce a 100 MiB body but send none of it, so the status must come from the headers alone.
    connection = socket.create_connection((host, int(port)), timeout=10)
    connection.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n" + headers +
                       b"Content-Length: 104857600\\r\\n\\r\\n")
    reply = connection.recv(65536).decode()
    connection.close()
    return int(reply.split()[1])

token = os.environ["MG_RUN_TOKEN"].encode()
print(json.dumps([status_for(b""), status_for(b"Authorization: Bearer " + token + b"\\r\\n")]))
"""


def test_large_body_rejected_before_reading(tmp_path):
    result = run_mg(tmp_path, "rules: [{action: 'llm:*'}]\n", LARGE_BODY_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [401, 413]
    assert [line["status"] for line in result.audit] == [401, 413]


def test_unwritable_summary_rejected_at_start(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("rules: [{action: 'llm:*'}]\n")
    marker = tmp_path / "ran"
    result = subprocess.run([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--summary", str(tmp_path / "missing/s.json"),
                             "--", "touch", str(marker)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "cannot create the summary file" in result.stderr
    assert not marker.exists()


NULL_CAP_AGENT = """
import openai
reply = openai.OpenAI().chat.completions.create(model="gpt-4o-mini", max_tokens=None, messages=[{"role": "user", "content": "hi"}],
                                                extra_body={"max_tokens": None})
print(reply.usage.completion_tokens)
"""


def test_null_max_tokens_accepted(tmp_path):
    result = run_mg(tmp_path, "rules: [{action: 'llm:*'}]\n", NULL_CAP_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0
    assert result.audit[0]["status"] == 200


def test_check_explains_valid_profile():
    result = subprocess.run([MG_RUN, "check", "--explain", str(ROOT / "profiles/basic.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{ROOT / 'profiles/basic.yaml'}: valid, 2 rules"
    assert "  default_effect: deny" in lines
    row = next(line for line in lines if line.strip().startswith("rules[0]")).split()
    assert row == ["rules[0]", "llm:*", "allow", "-", "60", "1000", "-", "500", "-", "64000", "-", "-", "0.5", "1"]


def test_check_reports_all_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("rules: [{action: 'llm:*'}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - action: 'llm:*'\n    effect: alow\n    rate_limit: {max_per_hour: -3}\ncost_tracking: {}\n")
    result = subprocess.run([MG_RUN, "check", str(good), str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout == f"{good}: valid, 1 rule\n"
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3
    assert errors[0].startswith(f"{bad}:3:13: rules[0].effect: invalid value 'alow'")
    assert errors[1] == f"{bad}:4:32: rules[0].rate_limit.max_per_hour: must not be negative, got -3"
    assert errors[2].startswith(f"{bad}:5:1: cost_tracking: is not supported yet")


def test_readme_policy_example_is_valid(tmp_path):
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = tmp_path / "readme.yaml"
    policy.write_text(example)
    result = subprocess.run([MG_RUN, "check", "--explain", str(policy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "global_rate_limit also: USD/hour 5" in result.stdout
    assert "rules[0] also: tokens/minute 200000, USD/minute 0.5, consecutive 20, cooldown s 60, retries 2, retry delay s 1, failures in a row 10" in result.stdout


def test_shipped_profiles_load_and_explain():
    for name in ["basic", "research", "development", "enterprise"]:
        path = ROOT / f"profiles/{name}.yaml"
        result = subprocess.run([MG_RUN, "check", "--explain", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.startswith(f"{path}: valid"), name
        assert "  rule " in result.stdout, name
    explained = {name: subprocess.run([MG_RUN, "check", "--explain", str(ROOT / f"profiles/{name}.yaml")], capture_output=True, text=True).stdout
                 for name in ["research", "development", "enterprise"]}
    assert "rules[1] also: research in a row 8, calls per topic 5" in explained["research"]
    assert "model fallback: llm:gpt-4o -> llm:gpt-4o-mini when current_cost > 2" in explained["research"]
    assert "context trimming: to 60000 input tokens" in explained["research"]
    assert "rules[4] applies when: same_action_repeated > 5" in explained["development"]
    assert "applies to: environment production or staging; trust tier basic or higher" in explained["enterprise"]
    assert "rules[1] requires: delegation_approved = true" in explained["enterprise"]
    assert "fallback: llm:gpt-4o -> llm:gpt-4o-mini when cost_limit_hit" in explained["enterprise"]
    assert "budget: 500 USD a day, warning at 80%, critical at 100%" in explained["enterprise"]


def test_enterprise_profile_needs_environment(tmp_path):
    result = subprocess.run([MG_RUN, "--policy", str(ROOT / "profiles/enterprise.yaml"), "--upstream", "simulate", "--", "true"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "it needs environment production or staging (--env)" in result.stderr
    result = subprocess.run([MG_RUN, "--policy", str(ROOT / "profiles/enterprise.yaml"), "--upstream", "simulate", "--env", "staging",
                             "--", "true"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_runaway_concluded_under_research_profile(tmp_path):
    command = [MG_RUN, "--policy", str(ROOT / "profiles/research.yaml"), "--upstream", "simulate",
               "--summary", str(tmp_path / "summary.json"), "--audit", str(tmp_path / "audit.jsonl"),
               "--", sys.executable, str(ROOT / "examples/runaway_research.py")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "told to conclude" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["outcome"] == "completed"
    assert summary["stop_reason"] is None
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["decision"] for line in audit if line["action"] != "code:execute"].count("allow") == 30
    assert audit[-1]["decision"] == "conclude"
    assert "behavioral_limits.require_conclusion_after (30)" in audit[-1]["reason"]
    assert audit[-1]["cost_usd"] == 0


CAPABILITY_AGENT = """
import subprocess
unmount = subprocess.run(["umount", "/proc"], capture_output=True, text=True)
effective = next(int(line.split()[1], 16) for line in open("/proc/self/status") if line.startswith("CapEff:"))
writable = []
for path in ["/proc/sys/kernel/core_pattern", "/sys/kernel/uevent_helper"]:
    try:
        current = open(path).read()
        with open(path, "w") as settings:
            settings.write(current)  # the same value: nothing changes even if the write went through
        writable.append(path)
    except OSError:
        pass
print(unmount.returncode, effective >> 21 & 1, effective >> 19 & 1, effective >> 2 & 1, len(writable))
"""


def test_agent_cannot_unmount_its_proc(tmp_path):
    policy = 'rules:\n  - action: "llm:*"\n'
    result = run_mg(tmp_path, policy, CAPABILITY_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    code, sys_admin, sys_ptrace, dac_read_search, writable = result.stdout.split()
    # Without CAP_SYS_ADMIN the private /proc stays, so the host's processes stay hidden.
    assert code != "0"
    assert (sys_admin, sys_ptrace, dac_read_search) == ("0", "0", "0")
    # Kernel settings that make the kernel run a program as host root are read-only.
    assert writable == "0"


def test_sigkill_at_start_leaves_no_survivors(tmp_path):
    import random
    # A duration no other process uses marks the tree's sleeps in /proc/PID/cmdline.
    marker = f"300.{uuid.uuid4().int % 10**9:09d}"
    policy = tmp_path / "policy.yaml"
    policy.write_text('rules:\n  - action: "llm:*"\n')
    script = tmp_path / "tree.sh"
    # A setsid child, a double-forked grandchild, and the program itself, each sleeping.
    script.write_text(f"setsid sleep {marker} &\n(sleep {marker} &)\nexec sleep {marker}\n")
    def marked():
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                        found.append(pid)
                except OSError:
                    pass
        return found

    generator = random.Random(7)
    trees_seen = 0
    for index in range(100):
        process = subprocess.Popen([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--", "sh", str(script)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if index % 2:
            # Every other run is killed 0-20 ms after its tree is up, the rest 0-20 ms after mg-run starts.
            deadline = time.monotonic() + 3
            while len(marked()) < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            trees_seen += len(marked()) >= 3
        time.sleep(generator.uniform(0, 0.02))
        process.kill()
        process.wait()
    time.sleep(1)
    assert trees_seen == 50
    assert marked() == []
