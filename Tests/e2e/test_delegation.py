"""Sub-agents: an mg-run started inside a governed run is a delegate:spawn, decided by
every ancestor's policy, and its LLM calls are metered by its parent as well."""

import json
import os
import sqlite3

from conftest import MG_RUN, run_mg

PARENT = """
rules:
  - action: "llm:*"
  - action: "delegate:*"
    rate_limit:
      max_depth: 1
      max_concurrent: 1
    requires:
      delegation_approved: true
"""

CHILD = """
rules:
  - action: "llm:*"
  - action: "delegate:*"
"""

AGENT = r"""
import json, os, subprocess, sys, time
mg, child_policy = os.environ["MG_BINARY"], os.environ["CHILD_POLICY"]

def sub(*options, program):
    return subprocess.run([mg, "--policy", child_policy, *options, "--", sys.executable, "-c", program],
                          capture_output=True, text=True, timeout=60)

WORKER = '''
import os, subprocess, sys, openai
reply = openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
grandchild = subprocess.run([os.environ["MG_BINARY"], "--policy", os.environ["CHILD_POLICY"], "--context", "delegation_approved=true",
                             "--", sys.executable, "-c", "print('grandchild ran')"], capture_output=True, text=True, timeout=60)
print(reply.model, grandchild.returncode, "grandchild ran" in grandchild.stdout)
print(grandchild.stderr, file=sys.stderr)
'''
results = {}
unapproved = sub(program="print('ran')")
results["unapproved"] = [unapproved.returncode, unapproved.stdout, unapproved.stderr.strip().splitlines()[-1]]
approved = sub("--context", "delegation_approved=true", program=WORKER)
results["approved"] = [approved.returncode, approved.stdout.strip(), approved.stderr]
sleeper = subprocess.Popen([mg, "--policy", child_policy, "--context", "delegation_approved=true", "--", sys.executable, "-c", "import time; time.sleep(3)"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(1.5)
second = sub("--context", "delegation_approved=true", program="print('ran')")
results["concurrent"] = [second.returncode, second.stderr.strip().splitlines()[-1]]
results["sleeper"] = sleeper.wait(timeout=30)
print(json.dumps(results))
"""


def test_sub_agents_are_governed_by_parent(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(CHILD)
    env = {"MG_BINARY": os.path.abspath(MG_RUN), "CHILD_POLICY": str(child)}
    result = run_mg(tmp_path, PARENT, AGENT, "--upstream", "simulate", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    code, stdout, last = results["unapproved"]
    assert code == 125
    assert stdout == ""
    assert "requires context delegation_approved = 'true'" in last
    code, stdout, stderr = results["approved"]
    assert code == 0, stderr
    # The child's call reached the simulator through the parent; the grandchild was refused at depth 2.
    assert stdout == "gpt-4o-mini 125 False"
    assert "delegate:spawn denied by the parent run" in stderr
    assert "max_depth" in stderr
    code, last = results["concurrent"]
    assert code == 125
    assert "max_concurrent" in last
    assert results["sleeper"] == 0
    parent_llm = [line for line in result.audit if line["action"] == "llm:gpt-4o-mini" and line["decision"] == "allow"]
    assert len(parent_llm) == 1
    assert float(parent_llm[0]["cost_usd"]) > 0


SLOW_PARENT_AGENT = r"""
import os, subprocess, sys, threading, openai
mg, child_policy = os.environ["MG_BINARY"], os.environ["CHILD_POLICY"]
def slow_call():
    openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "slow"}], max_tokens=5)
thread = threading.Thread(target=slow_call)
thread.start()
child = subprocess.run([mg, "--policy", child_policy, "--context", "delegation_approved=true", "--", "true"], capture_output=True, text=True)
thread.join()
stripped = subprocess.run(["env", "-u", "MG_RUN_URL", "-u", "MG_RUN_TOKEN", mg, "--policy", child_policy, "--", "true"],
                          capture_output=True, text=True)
print(child.returncode, stripped.returncode)
print(child.stderr)
print(stripped.stderr)
"""


def test_sub_agent_keeps_parent_reservations(tmp_path, private_ledger):
    child = tmp_path / "child.yaml"
    child.write_text(CHILD)
    env = {"MG_BINARY": os.path.abspath(MG_RUN), "CHILD_POLICY": str(child)}
    result = run_mg(tmp_path, PARENT, SLOW_PARENT_AGENT, "--upstream", "simulate", "--simulate-latency-ms", "1500", env=env)
    assert result.returncode == 0, result.stderr
    codes = result.stdout.splitlines()[0]
    # The sub-agent ran; one that cleared its parent's variables was refused.
    assert codes == "0 125"
    assert "released the reservations" not in result.stdout
    assert "MG_RUN_URL or MG_RUN_TOKEN is missing" in result.stdout
    with sqlite3.connect(private_ledger) as connection:
        rows = connection.execute("SELECT agent_id, state FROM calls WHERE actions LIKE 'llm:%' ORDER BY admitted_at").fetchall()
        released = connection.execute("SELECT count(*) FROM calls WHERE state = 'released'").fetchone()[0]
        agents = [agent for (agent,) in connection.execute("SELECT agent_id FROM runs ORDER BY started_at").fetchall()]
    # The sub-agent can only read its parent's ledger, so it keeps its own beside it.
    with sqlite3.connect(private_ledger.with_name("ledger-depth-1.sqlite")) as connection:
        agents += [agent for (agent,) in connection.execute("SELECT agent_id FROM runs ORDER BY started_at").fetchall()]
    assert rows == [("default", "settled")]
    assert released == 0
    assert agents[:2] == ["default", "default>default"]
