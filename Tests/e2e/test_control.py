"""mg-run status, pause, resume and stop against a real run: the agent's CPU time stops while it is
frozen, and a frozen tree can still be stopped at once."""

import json
import os
import stat
import subprocess
import sys
import time
import uuid

from conftest import MG_RUN

BURN = "while True:\n    sum(range(10000))\n"


def start_agent(tmp_path, task, policy, agent, *options):
    """Starts mg-run with the simulated upstream on `agent` (Python source) under `policy` (YAML text)."""
    (tmp_path / "policy.yaml").write_text(policy)
    script = tmp_path / "agent.py"
    script.write_text(agent)
    return subprocess.Popen([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate", "--task", task,
                             *options, "--", sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_burning(tmp_path, task, *options):
    process = start_agent(tmp_path, task, 'rules:\n  - action: "llm:*"\n', BURN, "--summary", str(tmp_path / "summary.json"), *options)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if task in control("status").stdout:
            return process
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the run never showed in mg-run status")


def control(*arguments):
    return subprocess.run([MG_RUN, *arguments], capture_output=True, text=True, timeout=30)


def run_pids(run_id):
    """Lists the pids in the run's cgroup, read from the host."""
    # A hybrid host mounts cgroup2 at /sys/fs/cgroup/unified, a pure v2 host at /sys/fs/cgroup.
    root = "/sys/fs/cgroup/unified" if os.path.exists("/sys/fs/cgroup/unified/cgroup.procs") else "/sys/fs/cgroup"
    with open(f"{root}/mg-run/{run_id}/cgroup.procs") as procs:
        return procs.read().split()


def cpu_ticks(run_id):
    """User plus system ticks of the run's processes, read from the host through its cgroup."""
    pids = run_pids(run_id)
    total = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def run_id_of(task):
    line = next(line for line in control("status").stdout.splitlines() if task in line)
    return line.split()[0]


def test_pause_freezes_and_resume_thaws(tmp_path):
    task = "burn-" + uuid.uuid4().hex[:8]
    process = start_burning(tmp_path, task)
    try:
        run_id = run_id_of(task)
        assert control("pause", task).stdout.strip() == f"{run_id}: paused"
        assert f"{task}  default  paused" in control("status").stdout
        before = cpu_ticks(run_id)
        time.sleep(1)
        assert cpu_ticks(run_id) == before
        assert control("resume", run_id).stdout.strip() == f"{run_id}: running"
        time.sleep(1)
        assert cpu_ticks(run_id) > before
        assert control("stop", task).returncode == 0
        assert process.wait(timeout=15) == 125
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["stop_reason"] == "control:stop"
    finally:
        process.kill()


def test_paused_tree_stops_at_once(tmp_path):
    task = "frozen-" + uuid.uuid4().hex[:8]
    process = start_burning(tmp_path, task, "--kill-grace", "0")
    try:
        assert control("pause", task).returncode == 0
        started = time.monotonic()
        assert control("stop", task).returncode == 0
        assert process.wait(timeout=15) == 125
        assert time.monotonic() - started < 2
    finally:
        process.kill()


def test_control_socket_is_private(tmp_path):
    task = "private-" + uuid.uuid4().hex[:8]
    process = start_burning(tmp_path, task)
    try:
        run_id = run_id_of(task)
        directory = "/run/mg-run" if os.geteuid() == 0 else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), "mg-run")
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(f"{directory}/{run_id}.sock").st_mode) == 0o600
    finally:
        control("stop", task)
        process.wait(timeout=15)


def test_unknown_run_is_an_error():
    result = control("pause", "no-such-run")
    assert result.returncode == 1
    assert "no running mg-run has run id or task id 'no-such-run'; see mg-run status" in result.stderr


PAUSE_AGENT = """
import json, time, openai
client = openai.OpenAI(max_retries=0)
times = []
for _ in range(3):
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        outcome = "answered"
    except openai.RateLimitError:
        outcome = "refused"
    times.append([outcome, time.monotonic()])
print(json.dumps(times))
"""


def test_limit_pause_freezes_until_window_reopens(tmp_path):
    from conftest import run_mg
    policy = 'rules:\n  - action: "llm:*"\n    rate_limit:\n      max_per_second: 1\non_limit_exceeded:\n  action: pause\n'
    result = run_mg(tmp_path, policy, PAUSE_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    (first, at_first), (second, at_second), (third, at_third) = json.loads(result.stdout)
    assert [first, second] == ["answered", "refused"]
    # Frozen before it read the refusal, until the one-second window reopened.
    assert at_second - at_first >= 0.5
    assert third == "answered"
    pauses = [line for line in result.audit if line["decision"] == "pause"]
    assert len(pauses) == 1
    assert "on_limit_exceeded:pause" in pauses[0]["reason"]


def test_budget_pause_freezes_until_resumed(tmp_path):
    task = "budget-" + uuid.uuid4().hex[:8]
    policy = 'rules:\n  - action: "llm:*"\nbudget:\n  daily_limit_usd: 1.00\n  warning_threshold_percent: 0\n  on_warning: [pause]\n'
    process = start_agent(tmp_path, task, policy, PAUSE_AGENT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and f"{task}  default  paused" not in control("status").stdout:
            time.sleep(0.1)
        assert f"{task}  default  paused" in control("status").stdout
        assert control("resume", task).returncode == 0
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert [outcome for outcome, _ in json.loads(out)] == ["answered", "answered", "answered"]
    finally:
        process.kill()


LOOPING_AGENT = """
import openai, time
client = openai.OpenAI(max_retries=0)
while True:
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "same question"}], max_tokens=5)
    except openai.APIStatusError:
        pass
    time.sleep(0.05)
"""


def test_breaker_pauses_looping_agent(tmp_path):
    task = "loop-" + uuid.uuid4().hex[:8]
    policy = ('rules:\n  - action: "llm:*"\ncircuit_breaker:\n  triggers:\n'
              '    - {name: loop, condition: "same_action_repeated > 5", action: pause, cooldown_minutes: 1}\n')
    process = start_agent(tmp_path, task, policy, LOOPING_AGENT, "--audit", str(tmp_path / "audit.jsonl"))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and f"{task}  default  paused" not in control("status").stdout:
            time.sleep(0.1)
        assert f"{task}  default  paused" in control("status").stdout
        trips = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines() if '"trip"' in line]
        assert len(trips) == 1
        assert "same_action_repeated=6" in trips[0]["reason"]
    finally:
        control("stop", task)
        process.wait(timeout=15)


VARYING_AGENT = LOOPING_AGENT.replace('"content": "same question"', '"content": f"question {time.time()}"')


def test_emergency_stop_kills_runaway(tmp_path):
    from conftest import run_mg
    policy = 'rules:\n  - action: "llm:*"\nemergency_stop:\n  trigger: ["calls_last_minute > 8"]\n  action: kill\n'
    result = run_mg(tmp_path, policy, VARYING_AGENT, "--upstream", "simulate", "--kill-grace", "1")
    assert result.returncode == 125
    assert result.summary["stop_reason"] == "trigger:emergency_stop.trigger[0]"
    trips = [line for line in result.audit if line["decision"] == "trip"]
    assert len(trips) == 1
    assert "calls_last_minute=9" in trips[0]["reason"]


BOUNDED_AGENT = """
import json, os, time, urllib.request
sent = refused = 0
for index in range(12):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q {index}"}], "max_tokens": 20}).encode()
    request = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body,
                                     headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10).read()
        sent += 1
    except urllib.error.HTTPError as error:
        refused += 1
print(json.dumps({"sent": sent, "refused": refused}))
"""


def test_reduce_rate_limit_trip_saves_state_and_notifies(tmp_path):
    from conftest import run_mg
    policy = ('run: {on_trip: kill}\nrules:\n  - action: "llm:*"\n    rate_limit: {max_per_minute: 8}\n'
              'circuit_breaker:\n  triggers:\n'
              '    - {name: burst, condition: "calls_last_minute >= 4", action: reduce_rate_limit, cooldown_minutes: 5}\n'
              '  on_trip: [{log: error}, {notify: ops-slack}, {save_state: true}]\n')
    result = run_mg(tmp_path, policy, BOUNDED_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    # Eight a minute halved to four once the fourth call tripped the breaker.
    assert json.loads(result.stdout) == {"sent": 4, "refused": 8}
    trips = [line for line in result.audit if line["decision"] == "trip"]
    assert len(trips) == 1
    assert "count limits halved for 300s" in trips[0]["reason"]
    states = [line for line in result.audit if line["decision"] == "state"]
    assert len(states) == 1
    assert states[0]["reason"].startswith("circuit_breaker.triggers[0] (burst): calls 4, in flight 0")
    assert "error: trigger tripped" in result.stderr
    assert "trigger tripped; notifying ops-slack" in result.stderr


ORPHANS = """
import os, time
for _ in range(50):
    if os.fork() == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
    os.wait()
time.sleep(1)
print("done", flush=True)
time.sleep(30)
"""


def test_init_reaps_orphans(tmp_path):
    task = "orphans-" + uuid.uuid4().hex[:8]
    process = start_agent(tmp_path, task, 'rules:\n  - action: "llm:*"\n', ORPHANS)
    try:
        assert process.stdout.readline().strip() == "done"
        run_id = run_id_of(task)
        pids = run_pids(run_id)
        states = [open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] for pid in pids]
        # The init and the agent remain; the 50 double-forked orphans were reaped, none left a zombie.
        assert len(pids) == 2
        assert "Z" not in states
    finally:
        control("stop", task)
        process.wait(timeout=15)


def test_agent_without_sigterm_handler_stops_within_grace(tmp_path):
    task = "term-" + uuid.uuid4().hex[:8]
    sleeper = "import time\nprint('up', flush=True)\ntime.sleep(120)\n"
    process = start_agent(tmp_path, task, 'rules:\n  - action: "llm:*"\n', sleeper, "--kill-grace", "10")
    try:
        assert process.stdout.readline().strip() == "up"
        started = time.monotonic()
        assert control("stop", task).returncode == 0
        # SIGTERM's default action ends Python at once, long before the 10 s grace period.
        assert process.wait(timeout=15) == 125
        assert time.monotonic() - started < 3
    finally:
        process.kill()
