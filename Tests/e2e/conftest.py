"""Helpers for end-to-end tests: the real mg-run binary, real SDKs, the simulator."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MG_RUN = str(ROOT / os.environ.get("MG_RUN", ".build/debug/mg-run"))
PRICES = yaml.safe_load((ROOT / "profiles/prices.yaml").read_text())["models"]


def expected_cost(model, input_tokens, output_tokens):
    """Dollars for uncached usage, from the shipped price table."""
    price = PRICES[model]
    return (input_tokens * price["input_per_mtok"] + output_tokens * price["output_per_mtok"]) / 1e6


class Simulator:
    """A standalone `mg-run simulate` process, so tests can count upstream requests."""

    def __init__(self, *extra):
        self.process = subprocess.Popen([MG_RUN, "simulate", "--port", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), f"simulator did not start: {self.url!r}"

    def stats(self):
        import urllib.request
        with urllib.request.urlopen(self.url + "/sim/stats", timeout=5) as response:
            return json.load(response)

    def close(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)


@pytest.fixture(autouse=True)
def private_ledger(tmp_path, monkeypatch):
    """Each test gets its own default ledger, so runs of different tests never share daily windows."""
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state / "mg-run" / "ledger.sqlite"


@pytest.fixture
def simulator():
    sim = Simulator()
    yield sim
    sim.close()


class Result:
    def __init__(self, completed, tmp):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        summary = tmp / "summary.json"
        self.summary = json.loads(summary.read_text()) if summary.exists() else None
        audit = tmp / "audit.jsonl"
        self.audit = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []


def run_mg(tmp_path, policy, script, *options, timeout=120, env=None):
    """Run a Python script under mg-run with the given policy text; return its result."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy)
    script_file = tmp_path / "agent.py"
    script_file.write_text(script)
    command = [MG_RUN, "--policy", str(policy_file), "--summary", str(tmp_path / "summary.json"),
               "--audit", str(tmp_path / "audit.jsonl"), *options, "--", sys.executable, str(script_file)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return Result(completed, tmp_path)


ALLOW_ALL = """
default_effect: deny
rules:
  - action: "llm:*"
"""
