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
    assert apac == "forbidden"
    denied = [line["reason"] for line in result.audit if line["decision"] == "deny"]
    assert "denied by rules[1]" in denied[0]
    assert "default_effect" in denied[-1]


def test_run_without_context_matches_no_rule(tmp_path):
    result = run_mg(tmp_path, POLICY, AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "forbidden forbidden forbidden forbidden forbidden"
