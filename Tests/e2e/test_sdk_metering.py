"""The official SDKs through mg-run and the simulator: what the SDK received is what was audited and charged."""

import json

from conftest import ALLOW_ALL, expected_cost, run_mg


def assert_audit_matches(calls, seen, models):
    """Each audited call has the tokens the SDK reported and the price table's cost."""
    for line, (prompt, completion), model in zip(calls, seen, models):
        assert line["model"] == model
        assert line["input_tokens"] == prompt
        assert line["output_tokens"] == completion
        assert abs(line["cost_usd"] - expected_cost(model, prompt, completion)) < 1e-8

OPENAI_AGENT = """
import json, openai
client = openai.OpenAI()
seen = []
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "plain call"}])
seen.append([reply.usage.prompt_tokens, reply.usage.completion_tokens])
stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "streamed call with usage"}],
                                        stream=True, stream_options={"include_usage": True})
usage = [chunk.usage for chunk in stream][-1]
seen.append([usage.prompt_tokens, usage.completion_tokens])
chunks = list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "streamed, no usage asked"}], stream=True))
assert all(chunk.usage is None for chunk in chunks), "mg-run leaked the usage chunk it asked for"
assert chunks[-1].choices[0].finish_reason is not None
print(json.dumps(seen))
"""


def test_openai_usage_matches_audit(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL, OPENAI_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    calls = [line for line in result.audit if line["decision"] == "allow"]
    assert len(calls) == 3
    assert_audit_matches(calls, seen, ["gpt-4o-mini", "gpt-4o"])
    # The third call streamed without include_usage: mg-run still metered it.
    assert calls[2]["output_tokens"] > 0
    assert "estimated" not in calls[2]
    assert result.summary["calls"] == 3
    assert abs(result.summary["cost_usd"] - sum(line["cost_usd"] for line in calls)) < 1e-8


ANTHROPIC_AGENT = """
import json, anthropic
client = anthropic.Anthropic()
seen = []
message = client.messages.create(model="claude-haiku-4-5", max_tokens=300, messages=[{"role": "user", "content": "plain"}])
seen.append([message.usage.input_tokens, message.usage.output_tokens])
with client.messages.stream(model="claude-sonnet-4-5", max_tokens=400, messages=[{"role": "user", "content": "a streamed message"}]) as stream:
    final = stream.get_final_message()
seen.append([final.usage.input_tokens, final.usage.output_tokens])
print(json.dumps(seen))
"""


def test_anthropic_usage_matches_audit(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL, ANTHROPIC_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    calls = [line for line in result.audit if line["decision"] == "allow"]
    assert len(calls) == 2
    assert_audit_matches(calls, seen, ["claude-haiku-4-5", "claude-sonnet-4-5"])


EMBEDDING_AGENT = """
import openai
client = openai.OpenAI()
result = client.embeddings.create(model="text-embedding-3-small", input=["first text", "second"])
print(result.usage.prompt_tokens, len(result.data), len(result.data[0].embedding))
"""


def test_embeddings_metered(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL, EMBEDDING_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    tokens, count, dimensions = map(int, result.stdout.split())
    assert (count, dimensions) == (2, 1536)
    assert result.audit[0]["input_tokens"] == tokens
    assert result.audit[0]["output_tokens"] == 0


LOCAL_MODEL_AGENT = """
import openai
reply = openai.OpenAI().chat.completions.create(model="local-llama-3", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
print(reply.usage.prompt_tokens, reply.usage.completion_tokens)
"""


def test_policy_prices_a_model_the_table_lacks(tmp_path):
    policy = ALLOW_ALL + 'prices:\n  "local-*": {input_per_mtok: 1.0, output_per_mtok: 2.0, per_call: 0.001}\n'
    result = run_mg(tmp_path, policy, LOCAL_MODEL_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    prompt, completion = map(int, result.stdout.split())
    line = result.audit[0]
    assert line["decision"] == "allow"
    assert abs(line["cost_usd"] - ((prompt * 1.0 + completion * 2.0) / 1e6 + 0.001)) < 1e-9


RESPONSES_AGENT = """
import json, openai
client = openai.OpenAI()
seen = []
response = client.responses.create(model="gpt-4.1", input="a plain Responses call", max_output_tokens=300)
seen.append([response.usage.input_tokens, response.usage.output_tokens, len(response.output_text) > 0])
final = None
for event in client.responses.create(model="gpt-4.1", input=[{"role": "user", "content": "a streamed Responses call"}], stream=True):
    if event.type in ("response.completed", "response.incomplete"):
        final = event.response
seen.append([final.usage.input_tokens, final.usage.output_tokens, len(final.output_text) > 0])
# The SDK's stream helper checks the order of item and content events.
with client.responses.stream(model="gpt-4.1", input="through the stream helper") as stream:
    helped = stream.get_final_response()
seen.append([helped.usage.input_tokens, helped.usage.output_tokens, len(helped.output_text) > 0])
print(json.dumps(seen))
"""


def test_responses_api_usage_matches_audit(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL, RESPONSES_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(text for _, _, text in seen)
    calls = [line for line in result.audit if line["decision"] == "allow"]
    assert len(calls) == 3
    assert_audit_matches(calls, [[prompt, completion] for prompt, completion, _ in seen], ["gpt-4.1"] * 3)
    assert "estimated" not in calls[1]


def test_unknown_model_allowed_free(tmp_path):
    agent = LOCAL_MODEL_AGENT.replace("local-llama-3", "in-house-model").replace("max_tokens=50, ", "")
    result = run_mg(tmp_path, ALLOW_ALL + "unknown_model: allow_free\n", agent, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    prompt, completion = map(int, result.stdout.split())
    line = result.audit[0]
    assert line["decision"] == "allow"
    assert line["cost_usd"] == 0
    # No max_tokens was injected: the simulator's natural reply is at least 200 tokens.
    assert completion >= 200
    assert line["output_tokens"] == completion
