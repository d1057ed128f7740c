"""Rules' audit levels through the real binary: none, basic and detailed with redaction."""

from conftest import run_mg

POLICY = """
rules:
  - action: "llm:gpt-4o-mini"
    audit: none
  - action: "llm:gpt-4o"
    audit: detailed
  - action: "llm:gpt-4.1"
"""

AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
secret = "my key is sk-abcdefghijklmnopqrstuvwxyz123456"
for model in ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": secret}], max_tokens=5)
stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "streamed"}], max_tokens=5, stream=True)
for _ in stream:
    pass
"""


def test_audit_levels(tmp_path):
    result = run_mg(tmp_path, POLICY, AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    models = [line["model"] for line in result.audit if line["decision"] == "allow"]
    assert models == ["gpt-4o", "gpt-4.1", "gpt-4o"]
    detailed, basic, streamed = [line for line in result.audit if line["decision"] == "allow"]
    assert "my key is [REDACTED]" in detailed["request_body"]
    assert "sk-abcdefghijklmnopqrstuvwxyz" not in detailed["request_body"]
    assert '"chat.completion"' in detailed["response_body"]
    assert "request_body" not in basic
    assert "streamed" in streamed["request_body"]
    assert "data: " in streamed["response_body"]
    assert result.summary["calls"] == 4


LEAKING_AGENT = """
import json, os, urllib.request, urllib.error, openai
token = os.environ["MG_RUN_TOKEN"]
client = openai.OpenAI(max_retries=0)
for model in [token, "sk-proj-abcdefghijklmnopqrstuv"]:
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    except openai.APIStatusError:
        pass
for path, body in [("/v1/secret/" + token, b"{}"), ("/mg/v1/check", json.dumps({"action": "tool:" + token}).encode())]:
    request = urllib.request.Request(os.environ["MG_RUN_URL"] + path, data=body, method="POST", headers={"Authorization": "Bearer " + token})
    try:
        urllib.request.urlopen(request, timeout=10).read()
    except urllib.error.HTTPError:
        pass
print(token)
"""


def test_secrets_never_reach_audit_fields(tmp_path):
    result = run_mg(tmp_path, POLICY, LEAKING_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    text = (tmp_path / "audit.jsonl").read_text()
    assert len(result.audit) == 4
    assert token not in text
    assert "sk-proj-abcdefghijklmnopqrstuv" not in text
    assert text.count("[REDACTED]") >= 4
