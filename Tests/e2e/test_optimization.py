"""optimization through the real binary and SDKs: model_fallback and context_trimming."""

import json

from conftest import run_mg

FALLBACK_POLICY = """
rules:
  - action: "llm:*"
optimization:
  model_fallback:
    enabled: true
    rules:
      - when: "calls_last_minute >= 2"
        fallback: {from: "llm:gpt-4o", to: "llm:gpt-4o-mini", for_actions: ["llm:completion"]}
"""

FALLBACK_AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
for _ in range(4):
    print(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5).model)
"""


def test_model_fallback_moves_calls_once_condition_holds(tmp_path):
    result = run_mg(tmp_path, FALLBACK_POLICY, FALLBACK_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]
    moves = [line for line in result.audit if line["decision"] == "fallback"]
    assert len(moves) == 2
    assert "optimization.model_fallback.rules[0] (calls_last_minute >= 2)" in moves[0]["reason"]


TRIM_POLICY = """
rules:
  - action: "llm:*"
optimization:
  context_trimming:
    enabled: true
    max_context_tokens: 400
    trim_strategy: keep_recent_and_important
"""

TRIM_AGENT = """
import json, anthropic, openai
history = [{"role": "system", "content": "You are terse."}]
for turn in range(12):
    history.append({"role": "user", "content": f"question {turn}: " + "words " * 40})
    history.append({"role": "assistant", "content": f"answer {turn}"})
history.append({"role": "user", "content": "the newest question"})
chat = openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=history, max_tokens=5)
short = openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=history[:3], max_tokens=5)
turns = [message for message in history[1:]]
claude = anthropic.Anthropic(max_retries=0).messages.create(model="claude-haiku-4-5", max_tokens=5, system="terse", messages=turns)
print(json.dumps({"chat": chat.usage.prompt_tokens, "short": short.usage.prompt_tokens, "claude": claude.usage.input_tokens}))
"""


def test_context_trimming_shortens_long_requests(tmp_path):
    result = run_mg(tmp_path, TRIM_POLICY, TRIM_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    # The simulator counts about a token per 4 bytes; untrimmed, the chat history is over 1000.
    assert seen["chat"] <= 400
    assert seen["claude"] <= 400
    trims = [line for line in result.audit if line["decision"] == "trim"]
    assert len(trims) == 2
    assert "messages removed" in trims[0]["reason"]
    # A request that fits is forwarded untouched.
    assert seen["short"] < 150
