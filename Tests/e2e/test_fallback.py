"""on_limit_exceeded strategies through the real binary and the openai SDK:
graceful_degradation's fallback_chain, kill and notify."""

from conftest import run_mg

AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
for attempt in range(5):
    try:
        response = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
        print(response.model)
    except openai.RateLimitError as error:
        print("refused", error.code)
    except openai.PermissionDeniedError:
        print("forbidden")
"""


def degradation_policy(when, mini_limit=10):
    return f"""
rules:
  - action: "llm:gpt-4o"
    rate_limit:
      max_per_minute: 2
  - action: "llm:gpt-4o-mini"
    rate_limit:
      max_per_minute: {mini_limit}
on_limit_exceeded:
  action: deny
  strategy: graceful_degradation
  fallback_chain:
    - from: "llm:gpt-4o*"
      to: "llm:gpt-4o-mini"
      when: {when}
"""


def test_rate_limit_moves_calls_to_cheaper_model(tmp_path):
    result = run_mg(tmp_path, degradation_policy("rate_limit_hit"), AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"]
    fallbacks = [line for line in result.audit if line["decision"] == "fallback"]
    assert len(fallbacks) == 3
    assert "rules[0].rate_limit.max_per_minute" in fallbacks[0]["reason"]
    settled = [line["model"] for line in result.audit if line["decision"] == "allow"]
    assert settled == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"]


def test_cost_step_ignores_rate_limit(tmp_path):
    result = run_mg(tmp_path, degradation_policy("cost_limit_hit"), AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["gpt-4o", "gpt-4o", "refused rate_limit_exceeded", "refused rate_limit_exceeded", "refused rate_limit_exceeded"]
    assert not [line for line in result.audit if line["decision"] == "fallback"]


def test_fallback_target_is_checked_again(tmp_path):
    result = run_mg(tmp_path, degradation_policy("all_limits_hit", mini_limit=1), AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "refused rate_limit_exceeded", "refused rate_limit_exceeded"]
    denied = [line for line in result.audit if line["decision"] == "deny"]
    assert all("rules[1].rate_limit.max_per_minute" in line["reason"] for line in denied)


def test_cost_ceiling_moves_calls_to_cheaper_model(tmp_path):
    policy = """
rules:
  - action: "llm:gpt-4o"
    cost_ceiling:
      max_usd_per_call: 0.0001
  - action: "llm:gpt-4o-mini"
on_limit_exceeded:
  strategy: graceful_degradation
  fallback_chain:
    - {from: "llm:gpt-4o", to: "llm:gpt-4o-mini", when: cost_limit_hit}
"""
    # 20 output tokens of gpt-4o cost 0.0002 USD, past the per-call ceiling; gpt-4o-mini fits.
    result = run_mg(tmp_path, policy, AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gpt-4o-mini"] * 5


def test_kill_stops_run_at_first_limit(tmp_path):
    policy = """
rules:
  - action: "llm:*"
    rate_limit:
      max_per_minute: 2
on_limit_exceeded:
  action: kill
  notify:
    - channel: log
      message: "limit {limit_type} hit by {action} in task {task_id}"
"""
    result = run_mg(tmp_path, policy, AGENT, "--upstream", "simulate", "--kill-grace", "1", "--task", "t-kill")
    assert result.returncode == 125
    assert result.summary["stop_reason"] == "on_limit_exceeded:kill"
    assert "limit rate limit rules[0].rate_limit.max_per_minute hit by llm:gpt-4o in task t-kill" in result.stderr


def test_fallback_never_crosses_provider_apis(tmp_path):
    policy = """
rules:
  - action: "llm:gpt-4o"
    rate_limit:
      max_per_minute: 2
  - action: "llm:claude-haiku-4-5"
on_limit_exceeded:
  strategy: graceful_degradation
  fallback_chain:
    - {from: "llm:gpt-4o", to: "llm:claude-haiku-4-5", when: rate_limit_hit}
"""
    result = run_mg(tmp_path, policy, AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["gpt-4o", "gpt-4o", "refused rate_limit_exceeded", "refused rate_limit_exceeded", "refused rate_limit_exceeded"]
    assert "fallback skipped: its model does not serve this kind of call or is served by another provider's API" in result.stderr
