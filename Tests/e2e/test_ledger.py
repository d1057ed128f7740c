"""The SQLite ledger through the real binary: runs of one agent id share daily
limits one after another and at once, and a SIGKILLed mg-run leaves a ledger
that the next run reads correctly."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import MG_RUN

# One call of this agent costs about 0.0003 USD on gpt-4o-mini: the ceiling fits a handful.
CEILING = 0.004

POLICY = f"""
default_effect: deny
rules:
  - action: "llm:*"
    cost_ceiling:
      max_usd_per_day: {CEILING}
"""

# Calls until denied (or N calls when given), and writes one line per successful call to the progress file.
AGENT = """
import sys, openai
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 10**6
client = openai.OpenAI(max_retries=0)
with open(sys.argv[1], "a") as progress:
    for _ in range(limit):
        try:
            client.chat.completions.create(model="gpt-4o-mini", max_tokens=200,
                messages=[{"role": "user", "content": "Write a paragraph about ledgers. " * 20}])
        except (openai.RateLimitError, openai.PermissionDeniedError) as error:
            print("refused:", error.status_code, file=sys.stderr)
            break
        progress.write("answered\\n")
        progress.flush()
"""


def start(tmp_path, name, ledger, *agent_args, latency=0, agent_id="writer"):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    command = [MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--simulate-latency-ms", str(latency),
               "--ledger", str(ledger), "--agent-id", agent_id, "--summary", str(tmp_path / f"{name}.json"),
               "--", sys.executable, str(script), str(tmp_path / f"{name}.progress"), *agent_args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(ledger, sql, *args):
    with sqlite3.connect(ledger) as connection:
        return connection.execute(sql, args).fetchall()


def settled_usd(ledger, run=None):
    sql = "SELECT coalesce(sum(cost_picodollars), 0) FROM calls WHERE state = 'settled'"
    if run:
        sql += " AND run_id = ?"
        return rows(ledger, sql, run)[0][0] / 1e12
    return rows(ledger, sql)[0][0] / 1e12


def largest_call_usd(ledger):
    return rows(ledger, "SELECT max(cost_picodollars) FROM calls WHERE state = 'settled'")[0][0] / 1e12


def test_runs_one_after_another_share_daily_ceiling(tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    first = start(tmp_path, "first", ledger, "4")
    assert first.wait(timeout=60) == 0, first.stderr.read()
    spent_first = settled_usd(ledger)
    assert spent_first > 0
    second = start(tmp_path, "second", ledger)
    second.wait(timeout=60)
    total = settled_usd(ledger)
    assert total <= CEILING
    # The second run used what the first left, not a fresh ceiling.
    assert total > CEILING - largest_call_usd(ledger) * 2


def test_other_agent_id_has_its_own_ceiling(tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    first = start(tmp_path, "first", ledger)
    first.wait(timeout=60)
    other = start(tmp_path, "other", ledger, "1", agent_id="reader")
    assert other.wait(timeout=60) == 0, other.stderr.read()
    assert len((tmp_path / "other.progress").read_text().splitlines()) == 1


def test_concurrent_runs_share_daily_ceiling(tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    runs = [start(tmp_path, f"run{index}", ledger, latency=30) for index in range(3)]
    for run in runs:
        run.wait(timeout=90)
    total = settled_usd(ledger)
    assert total <= CEILING
    assert total > CEILING - largest_call_usd(ledger) * 2
    per_run = [len((tmp_path / f"run{index}.progress").read_text().splitlines()) for index in range(3)]
    assert sum(1 for count in per_run if count > 0) >= 2, per_run
    assert rows(ledger, "SELECT count(*) FROM calls WHERE state = 'reserved'")[0][0] == 0


def test_sigkill_mid_call_leaves_ledger_next_run_reads(tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    killed = start(tmp_path, "killed", ledger, latency=1500)
    progress = tmp_path / "killed.progress"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if progress.exists() and len(progress.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    # The third call is now waiting on the simulator's 1.5 s latency.
    time.sleep(0.7)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    [(run_id,)] = rows(ledger, "SELECT run_id FROM runs")
    states = [state for (state,) in rows(ledger, "SELECT state FROM calls WHERE run_id = ? ORDER BY call_id", run_id)]
    assert states == ["settled", "settled", "reserved"]
    spent_killed = settled_usd(ledger, run_id)

    after = start(tmp_path, "after", ledger)
    after.wait(timeout=60)
    states = [state for (state,) in rows(ledger, "SELECT state FROM calls WHERE run_id = ? ORDER BY call_id", run_id)]
    assert states == ["settled", "settled", "released"]
    assert rows(ledger, "SELECT end_reason FROM runs WHERE run_id = ?", run_id) == [("process gone",)]
    # The dead run's two settled calls count once, its reservation not at all.
    assert settled_usd(ledger, run_id) == spent_killed
    total = settled_usd(ledger)
    assert total <= CEILING
    assert total > CEILING - largest_call_usd(ledger) * 2


def test_invalid_ledger_paths_are_refused(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    for path in ["", ".", str(tmp_path), ":memory:", "file::memory:", f"file:{tmp_path}/x.sqlite?mode=memory"]:
        result = subprocess.run([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--ledger", path, "--", "true"],
                                capture_output=True, text=True)
        assert result.returncode == 2, path
        assert "is not a file path; pass --ledger with a file name" in result.stderr, path


def test_failed_start_ends_its_run(tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    result = subprocess.run([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--ledger", str(ledger),
                             "--audit", str(tmp_path / "missing" / "audit.jsonl"), "--", "true"], capture_output=True, text=True)
    assert result.returncode == 2
    assert rows(ledger, "SELECT end_reason FROM runs") == [("failed to start",)]


EXPOSE_AGENT = """
import os, sys, time
with open(sys.argv[1], "w") as exposed:
    exposed.write(os.environ["MG_RUN_URL"] + " " + os.environ["MG_RUN_TOKEN"])
time.sleep(60)
"""


def test_sigkill_right_after_responses_keeps_settlements(tmp_path):
    import http.client
    import json as json_module
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - action: \"llm:*\"\n")
    script = tmp_path / "expose.py"
    script.write_text(EXPOSE_AGENT)
    ledger = tmp_path / "ledger.sqlite"
    for stream in [False, True, False, True]:
        exposed = tmp_path / "exposed.txt"
        exposed.unlink(missing_ok=True)
        # network host: this test's client, outside the run, talks to the proxy.
        process = subprocess.Popen([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--ledger", str(ledger), "--network", "host",
                                    "--", sys.executable, str(script), str(exposed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (exposed.exists() and exposed.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        url, token = exposed.read_text().split()
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": stream}
        for _ in range(3):
            connection.request("POST", "/v1/chat/completions", json_module.dumps(body), {"Authorization": "Bearer " + token})
            connection.getresponse().read()
        # Killed the moment the third response has been read in full.
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    # A new run recovers the four killed runs; every call a client read is settled, exactly once.
    after = start(tmp_path, "after", ledger, "1")
    after.wait(timeout=60)
    killed = rows(ledger, "SELECT state, count(*) FROM calls WHERE run_id IN (SELECT run_id FROM runs WHERE end_reason = 'process gone') GROUP BY state")
    assert killed == [("settled", 12)]
