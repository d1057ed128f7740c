"""Rule conditions through the real binary: run context, headers and metrics."""

from conftest import run_mg

POLICY = """
allowed_regions: [eu, us]
rules:
  - action: "llm:*"
    conditions: ["context.region in allowed_regions"]
  - action: "llm:*"
    effect: deny
    conditions: ["same_action_repeated > 3"]
"""

AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
def ask(text, **extra):
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}], max_tokens=5, **extra)
        return "answered"
    except openai.PermissionDeniedError as error:
        return "forbidden"
print(" ".join(ask("same question") for _ in range(5)))
print(ask("a new question"))
print(ask("from apac", extra_headers={"X-MG-Context-region": "apac"}))
"""


def test_conditions_follow_context_and_loops(tmp_path):
    result = run_mg(tmp_path, POLICY, AGENT, "--upstream", "simulate", "--context", "region=eu")
    assert result.returncode == 0, result.stderr
    loop, fresh, apac = result.stdout.splitlines()
    assert loop == "answered answered answered forbidden forbidden"
    assert fresh == "answered"
    # The operator's --context region=eu wins over the agent's X-MG-Context-region header.
    assert apac == "answered"
    denied = [line["reason"] for line in result.audit if line["decision"] == "deny"]
    assert "denied by rules[1]" in denied[0]
    assert len(denied) == 2


def test_run_without_context_matches_no_rule(tmp_path):
    result = run_mg(tmp_path, POLICY, AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "forbidden forbidden forbidden forbidden forbidden"


OVERRIDE_POLICY = """
rules:
  - action: "llm:*"
  - action: "llm:*"
    effect: deny
    conditions: ["context.budget_left < 1"]
"""

OVERRIDE_AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
for headers in [{}, {"X-MG-Context-budget_left": "5"}, {"X-MG-Context-budget_left": "abc"}]:
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5, extra_headers=headers)
        print("answered")
    except openai.PermissionDeniedError:
        print("forbidden")
"""


def test_agent_header_cannot_override_operator_context(tmp_path):
    result = run_mg(tmp_path, OVERRIDE_POLICY, OVERRIDE_AGENT, "--upstream", "simulate", "--context", "budget_left=0.2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["forbidden", "forbidden", "forbidden"]


def test_non_number_fails_closed(tmp_path):
    result = run_mg(tmp_path, OVERRIDE_POLICY, OVERRIDE_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    # Missing and non-numeric values are unknown, so the deny rule applies; 5 is a number above 1.
    assert result.stdout.split() == ["forbidden", "answered", "forbidden"]
