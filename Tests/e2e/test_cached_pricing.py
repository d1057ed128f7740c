"""Prompt-cache pricing end to end: the real SDKs send a long prompt twice
through mg-run to the simulator, which reports cache reads and writes the way
each provider does. Every settled cost must equal the price table applied to
the usage the SDK itself received: uncached input at input_per_mtok, cache
reads at cached_input_per_mtok, Anthropic cache writes at
cache_write_per_mtok and output at output_per_mtok."""

import json
from decimal import ROUND_HALF_UP, Decimal

from conftest import ALLOW_ALL, PRICES, run_mg

# mg-run writes dollar amounts rounded half up to 8 decimals.
PRINTED_STEP = Decimal("0.00000001")

# Builds a prompt of about 7,000 bytes (over 1,700 simulated tokens, so past
# the 1,024-token caching minimum). Each topic starts with a different word, so
# two topics share no prefix.
AGENT_PREAMBLE = """
import json
def long_text(topic):
    return " ".join(f"{topic} note {index}: this paragraph belongs to the long, stable part of the prompt." for index in range(90))
seen = []
"""


def price(model, column):
    """Dollars per million tokens from profiles/prices.yaml, as an exact decimal."""
    return Decimal(str(PRICES[model][column]))


def dollars(model, uncached=0, cache_read=0, cache_write=0, output=0, cache_write_per_mtok=None):
    """Exact dollars for one call's usage, each part at its own price."""
    per_mtok = (uncached * price(model, "input_per_mtok")
                + cache_read * price(model, "cached_input_per_mtok")
                + output * price(model, "output_per_mtok"))
    # OpenAI models have no cache-write price, and their usage reports no writes.
    if cache_write:
        per_mtok += cache_write * (cache_write_per_mtok or price(model, "cache_write_per_mtok"))
    return per_mtok / 1_000_000


def printed(amount):
    return amount.quantize(PRINTED_STEP, rounding=ROUND_HALF_UP)


def allowed_calls(tmp_path):
    """The audit log's settled calls, with cost_usd read as an exact decimal."""
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_float=Decimal) for line in lines]
    return [record for record in records if record["decision"] == "allow"]


def settled_total(tmp_path):
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_float=Decimal)
    return Decimal(summary["cost_usd"])


def agent_output(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_settled(tmp_path, expected):
    """Checks each audited call against (model, input tokens, output tokens, exact dollars), and the run's total."""
    calls = allowed_calls(tmp_path)
    assert len(calls) == len(expected)
    for index, (call, (model, input_tokens, output_tokens, cost)) in enumerate(zip(calls, expected)):
        assert call["model"] == model, f"call {index}"
        assert "estimated" not in call, f"call {index}: mg-run charged its bound, not the reported usage"
        assert call["input_tokens"] == input_tokens, f"call {index}"
        assert call["output_tokens"] == output_tokens, f"call {index}"
        assert Decimal(call["cost_usd"]) == printed(cost), f"call {index}: settled {call['cost_usd']} USD, expected {cost} USD"
    total = sum((cost for _, _, _, cost in expected), Decimal(0))
    assert settled_total(tmp_path) == printed(total)


# --- OpenAI chat completions -------------------------------------------------

CHAT_AGENT = AGENT_PREAMBLE + """
import openai
client = openai.OpenAI(max_retries=0)

def record(usage):
    seen.append({"prompt": usage.prompt_tokens, "cached": usage.prompt_tokens_details.cached_tokens,
                 "completion": usage.completion_tokens})

messages = [{"role": "system", "content": long_text("plain")}, {"role": "user", "content": "first question"}]
for _ in range(2):
    record(client.chat.completions.create(model="gpt-4o-mini", messages=messages).usage)

messages = [{"role": "system", "content": long_text("streamed")}, {"role": "user", "content": "second question"}]
for _ in range(2):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    record([chunk.usage for chunk in stream if chunk.usage is not None][-1])
print(json.dumps(seen))
"""


def openai_chat_dollars(model, usage):
    # cached_tokens is part of prompt_tokens.
    return dollars(model, uncached=usage["prompt"] - usage["cached"], cache_read=usage["cached"], output=usage["completion"])


def test_chat_cached_prompt_priced(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL, CHAT_AGENT, "--upstream", "simulate")
    seen = agent_output(result)
    assert len(seen) == 4
    # Each prompt is new on its first call and cached on its second, streamed or not.
    assert [usage["cached"] for usage in seen[0::2]] == [0, 0]
    assert all(usage["cached"] > 0 for usage in seen[1::2])
    expected = [("gpt-4o-mini", usage["prompt"], usage["completion"], openai_chat_dollars("gpt-4o-mini", usage)) for usage in seen]
    assert_settled(tmp_path, expected)


# A streamed call without include_usage: mg-run requests the usage chunk from the
# upstream and drops it, so the SDK gets none. The simulator is deterministic, so a
# third, identical call with include_usage shows the usage the second one had.
HIDDEN_USAGE_AGENT = AGENT_PREAMBLE + """
import openai
client = openai.OpenAI(max_retries=0)
messages = [{"role": "system", "content": long_text("hidden")}, {"role": "user", "content": "a question"}]
cold_usage = client.chat.completions.create(model="gpt-4o", messages=messages).usage
chunks = list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
assert all(chunk.usage is None for chunk in chunks), "mg-run leaked the usage chunk it asked for"
warm_usage = [chunk.usage for chunk in client.chat.completions.create(model="gpt-4o", messages=messages, stream=True,
                                                                       stream_options={"include_usage": True}) if chunk.usage][-1]
for usage in (cold_usage, warm_usage, warm_usage):
    seen.append({"prompt": usage.prompt_tokens, "cached": usage.prompt_tokens_details.cached_tokens,
                 "completion": usage.completion_tokens})
print(json.dumps(seen))
"""


def test_chat_hidden_usage_cached_priced(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL, HIDDEN_USAGE_AGENT, "--upstream", "simulate")
    seen = agent_output(result)
    assert seen[0]["cached"] == 0
    assert seen[1]["cached"] > 0
    expected = [("gpt-4o", usage["prompt"], usage["completion"], openai_chat_dollars("gpt-4o", usage)) for usage in seen]
    assert_settled(tmp_path, expected)


# --- OpenAI Responses ----------------------------------------------------------

RESPONSES_AGENT = AGENT_PREAMBLE + """
import openai
client = openai.OpenAI(max_retries=0)

def record(usage):
    seen.append({"input": usage.input_tokens, "cached": usage.input_tokens_details.cached_tokens,
                 "output": usage.output_tokens})

for _ in range(2):
    record(client.responses.create(model="gpt-4.1", instructions=long_text("plain"), input="first question").usage)

items = [{"role": "user", "content": long_text("streamed")}, {"role": "user", "content": "second question"}]
for _ in range(2):
    final = None
    for event in client.responses.create(model="gpt-4.1", input=items, stream=True):
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    record(final.usage)
print(json.dumps(seen))
"""


def test_responses_cached_input_priced(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL, RESPONSES_AGENT, "--upstream", "simulate")
    seen = agent_output(result)
    assert len(seen) == 4
    assert [usage["cached"] for usage in seen[0::2]] == [0, 0]
    assert all(usage["cached"] > 0 for usage in seen[1::2])
    # cached_tokens is part of input_tokens.
    expected = [("gpt-4.1", usage["input"], usage["output"],
                 dollars("gpt-4.1", uncached=usage["input"] - usage["cached"], cache_read=usage["cached"], output=usage["output"]))
                for usage in seen]
    assert_settled(tmp_path, expected)


# --- Anthropic messages --------------------------------------------------------

ANTHROPIC_RECORD = """
import anthropic
client = anthropic.Anthropic(max_retries=0)

def record(usage):
    seen.append({"input": usage.input_tokens, "read": usage.cache_read_input_tokens,
                 "write": usage.cache_creation_input_tokens,
                 "write_1h": usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else 0,
                 "output": usage.output_tokens})
"""

ANTHROPIC_AGENT = AGENT_PREAMBLE + ANTHROPIC_RECORD + """
system = [{"type": "text", "text": long_text("plain"), "cache_control": {"type": "ephemeral"}}]
for _ in range(2):
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=300, system=system,
                                     messages=[{"role": "user", "content": "first question"}])
    record(message.usage)

content = [{"type": "text", "text": long_text("streamed"), "cache_control": {"type": "ephemeral"}},
           {"type": "text", "text": "second question"}]
for _ in range(2):
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=300, messages=[{"role": "user", "content": content}]) as stream:
        record(stream.get_final_message().usage)
print(json.dumps(seen))
"""


def anthropic_total_input(usage):
    # Anthropic reports cache reads and writes beside input_tokens, not inside it.
    return usage["input"] + usage["read"] + usage["write"]


def test_anthropic_cache_read_write_priced(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL, ANTHROPIC_AGENT, "--upstream", "simulate")
    seen = agent_output(result)
    assert len(seen) == 4
    # The first call with each breakpoint writes the prefix, and the second reads it.
    assert all(usage["write"] > 0 for usage in seen[0::2])
    assert [usage["read"] for usage in seen[0::2]] == [0, 0]
    assert [usage["write"] for usage in seen[1::2]] == [0, 0]
    assert [usage["read"] for usage in seen[1::2]] == [usage["write"] for usage in seen[0::2]]
    expected = [("claude-sonnet-4-5", anthropic_total_input(usage), usage["output"],
                 dollars("claude-sonnet-4-5", uncached=usage["input"], cache_read=usage["read"], cache_write=usage["write"], output=usage["output"]))
                for usage in seen]
    assert_settled(tmp_path, expected)


ONE_HOUR_AGENT = AGENT_PREAMBLE + ANTHROPIC_RECORD + """
system = [{"type": "text", "text": long_text("hourly"), "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
for _ in range(2):
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=300, system=system,
                                     messages=[{"role": "user", "content": "a question"}])
    record(message.usage)
print(json.dumps(seen))
"""


def test_anthropic_one_hour_write_priced(tmp_path):
    # A write with ttl 1h is priced at cache_write_1h_per_mtok, not the 5-minute cache_write_per_mtok.
    result = run_mg(tmp_path, ALLOW_ALL, ONE_HOUR_AGENT, "--upstream", "simulate")
    seen = agent_output(result)
    assert seen[0]["write_1h"] > 0
    assert seen[0]["write_1h"] == seen[0]["write"]
    assert seen[1]["read"] == seen[0]["write"]
    one_hour_rate = price("claude-sonnet-4-5", "cache_write_1h_per_mtok")
    assert one_hour_rate == 2 * price("claude-sonnet-4-5", "input_per_mtok")
    expected = [("claude-sonnet-4-5", anthropic_total_input(usage), usage["output"],
                 dollars("claude-sonnet-4-5", uncached=usage["input"], cache_read=usage["read"], cache_write=usage["write"],
                         output=usage["output"], cache_write_per_mtok=one_hour_rate))
                for usage in seen]
    assert_settled(tmp_path, expected)


# --- Zero usage ----------------------------------------------------------------

ZERO_USAGE_AGENT = """
import json, openai
result = openai.OpenAI(max_retries=0).embeddings.create(model="text-embedding-3-small", input=[""])
print(json.dumps([result.usage.prompt_tokens, len(result.data)]))
"""


def test_zero_usage_costs_nothing(tmp_path):
    # The simulator reports zero tokens for an empty string to embed.
    result = run_mg(tmp_path, ALLOW_ALL, ZERO_USAGE_AGENT, "--upstream", "simulate")
    assert agent_output(result) == [0, 1]
    assert_settled(tmp_path, [("text-embedding-3-small", 0, 0, Decimal(0))])
