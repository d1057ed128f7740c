"""time_restrictions through the real binary, with mg-run's clock shifted by MG_RUN_CLOCK_OFFSET_SECONDS
so a window opens or closes a few seconds into the run."""

import json
import math
import time

from conftest import run_mg

TICKER = """
import json, sys, time
stamps = []
end = time.time() + 5
while time.time() < end:
    stamps.append(time.time())
    time.sleep(0.05)
print(json.dumps(stamps))
"""


def offset_to(seconds_before_boundary):
    """Returns the clock offset that puts mg-run that many seconds before an hour boundary, and that hour (UTC)."""
    now = time.time()
    boundary = math.ceil(now / 3600) * 3600 + 3600
    return boundary - seconds_before_boundary - now, time.gmtime(boundary).tm_hour


def test_pause_freezes_agent_until_window_opens(tmp_path):
    offset, hour = offset_to(2.5)
    policy = f"""
time_restrictions:
  allowed_hours: {{start: {hour}, end: {(hour + 1) % 24}}}
  timezone: UTC
  on_violation: pause
rules:
  - action: "llm:*"
"""
    started = time.time()
    result = run_mg(tmp_path, policy, TICKER, "--upstream", "simulate", env={"MG_RUN_CLOCK_OFFSET_SECONDS": str(offset)})
    assert result.returncode == 0, result.stderr
    stamps = json.loads(result.stdout)
    gaps = [later - earlier for earlier, later in [(started, stamps[0])] + list(zip(stamps, stamps[1:]))]
    # Frozen for most of the 2.5 s before the window opened, at its start or between two stamps, then thawed.
    assert max(gaps) >= 1.5
    assert "outside the allowed hours; pausing the agent" in result.stderr
    assert "the allowed hours began; resuming the agent" in result.stderr
    assert time.time() - started < 30


def test_kill_stops_run_when_window_closes(tmp_path):
    offset, hour = offset_to(1.5)
    policy = f"""
time_restrictions:
  allowed_hours: {{start: {(hour - 1) % 24}, end: {hour}}}
  on_violation: kill
rules:
  - action: "llm:*"
"""
    result = run_mg(tmp_path, policy, TICKER, "--upstream", "simulate", "--kill-grace", "1",
                    env={"MG_RUN_CLOCK_OFFSET_SECONDS": str(offset)})
    assert result.returncode == 125
    assert result.summary["stop_reason"] == "time_restrictions"
    assert 1 <= result.summary["duration_s"] < 5


DENY_AGENT = """
import openai
try:
    openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    print("answered")
except openai.RateLimitError as error:
    print(error.response.headers.get("retry-after"), error.message)
"""


def test_deny_with_message_outside_hours(tmp_path):
    offset, hour = offset_to(600)
    policy = f"""
time_restrictions:
  allowed_hours: {{start: {hour}, end: {(hour + 1) % 24}}}
  on_violation: deny_with_message
  violation_message: "The agent works only in the night shift."
rules:
  - action: "llm:*"
"""
    result = run_mg(tmp_path, policy, DENY_AGENT, "--upstream", "simulate", env={"MG_RUN_CLOCK_OFFSET_SECONDS": str(offset)})
    assert result.returncode == 0, result.stderr
    retry_after, message = result.stdout.strip().split(" ", 1)
    assert 590 <= int(retry_after) <= 601
    assert "The agent works only in the night shift." in message
