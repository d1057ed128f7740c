"""Policy layers through the real binary: agent_match picks the layers that apply."""

import subprocess
import sys

from conftest import MG_RUN

BASE = """
rules:
  - action: "llm:*"
"""

RESEARCH_ONLY = """
agent_match:
  tags: [research]
rules:
  - action: "llm:*"
    rate_limit:
      max_per_task: 1
"""

AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
for attempt in range(2):
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
        print("answered")
    except openai.RateLimitError:
        print("refused")
"""


def run_layers(tmp_path, layers, *options):
    command = [MG_RUN, "--upstream", "simulate"]
    for index, text in enumerate(layers):
        path = tmp_path / f"layer{index}.yaml"
        path.write_text(text)
        command += ["--policy", str(path)]
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    return subprocess.run([*command, *options, "--", sys.executable, str(script)], capture_output=True, text=True, timeout=60)


def test_matching_layer_applies(tmp_path):
    result = run_layers(tmp_path, [BASE, RESEARCH_ONLY], "--tag", "research")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["answered", "refused"]


def test_layer_for_other_tag_is_skipped(tmp_path):
    result = run_layers(tmp_path, [BASE, RESEARCH_ONLY], "--tag", "nightly")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["answered", "answered"]


def test_no_matching_layer_refuses_to_start(tmp_path):
    production = "agent_match:\n  environment: production\nrules:\n  - action: \"llm:*\"\n"
    result = run_layers(tmp_path, [production], "--env", "staging", "--tag", "nightly")
    assert result.returncode == 2
    assert "no policy layer applies to this run (tags: nightly; environment: staging; agent id: default; trust tier: basic)" in result.stderr
    assert "it needs environment production (--env)" in result.stderr


def test_invalid_trust_tier_names_choices(tmp_path):
    result = run_layers(tmp_path, [BASE], "--trust-tier", "root")
    assert result.returncode == 2
    assert "invalid --trust-tier 'root'; use one of untrusted, basic, verified, privileged" in result.stderr


def test_bad_options_name_the_fix(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(BASE)
    cases = [
        (["--simulate-latency-ms", "5"], "--simulate-latency-ms and --simulate-event-delay-ms need --upstream simulate"),
        (["--upstream", "openai=http://127.0.0.1:1/v1", "--upstream", "openai=http://127.0.0.1:2/v1"], "--upstream openai=... is given twice"),
        (["--upstream", "simulate", "--task", ""], "invalid --task ''"),
        (["--upstream", "simulate", "--env", ""], "invalid --env ''"),
    ]
    for options, message in cases:
        result = subprocess.run([MG_RUN, "--policy", str(policy), *options, "--", "true"], capture_output=True, text=True)
        assert result.returncode == 2, options
        assert message in result.stderr, options
    result = subprocess.run([MG_RUN, "--policy", str(tmp_path), "--upstream", "simulate", "--", "true"], capture_output=True, text=True)
    assert "is a directory, not a policy file" in result.stderr
