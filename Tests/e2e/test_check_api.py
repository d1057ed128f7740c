"""The check API (POST $MG_RUN_URL/mg/v1/check and /mg/v1/report) through the real binary."""

import json

from conftest import run_mg

POLICY = """
default_effect: deny
rules:
  - action: "db:write:*"
    rate_limit:
      max_per_minute: 2
  - action: "billing:*"
    cost_ceiling:
      max_usd_per_task: 0.05
  - action: "tool:deploy"
    requires:
      approved: true
      reviewer_tier: verified
  - action: "llm:*"
    requires:
      team: search
"""

AGENT = r"""
import json, os, sys, urllib.request, urllib.error, openai
url, token = os.environ["MG_RUN_URL"], os.environ["MG_RUN_TOKEN"]

def post(path, body):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)

results = {}
results["db"] = [post("/mg/v1/check", {"action": "db:write:users"}) for _ in range(3)]
results["report_db"] = post("/mg/v1/report", {"call_id": results["db"][0][1]["call_id"], "cost_usd": 0, "tokens": 10})
failed = post("/mg/v1/report", {"call_id": results["db"][1][1]["call_id"], "success": False})
results["report_failed"] = failed
results["db_after_failed"] = post("/mg/v1/check", {"action": "db:write:users"})
billing = []
for _ in range(3):
    status, body = post("/mg/v1/check", {"action": "billing:charge", "estimated_cost_usd": 0.02})
    billing.append(body)
    if body.get("allowed"):
        post("/mg/v1/report", {"call_id": body["call_id"], "cost_usd": 0.02})
results["billing"] = billing
results["deploy_bare"] = post("/mg/v1/check", {"action": "tool:deploy"})
results["deploy_ok"] = post("/mg/v1/check", {"action": "tool:deploy", "context": {"approved": True, "reviewer_tier": "verified"}})
results["unknown"] = post("/mg/v1/check", {"action": "tool:shell"})
results["missing_action"] = post("/mg/v1/check", {"context": {}})
results["bad_cost"] = post("/mg/v1/check", {"action": "db:write:x", "estimated_cost_usd": "lots"})
results["unknown_call"] = post("/mg/v1/report", {"call_id": "chk-999", "cost_usd": 1})
client = openai.OpenAI(max_retries=0)
try:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    results["llm_bare"] = "answered"
except openai.PermissionDeniedError as error:
    results["llm_bare"] = error.message
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                               extra_headers={"X-MG-Context-team": "search"})
results["llm_header"] = "answered"
print(json.dumps(results))
"""


def test_check_api(tmp_path):
    result = run_mg(tmp_path, POLICY, AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    statuses = [status for status, _ in results["db"]]
    assert statuses == [200, 200, 200]
    assert [body["allowed"] for _, body in results["db"]] == [True, True, False]
    refused = results["db"][2][1]
    assert refused["limit"] == "rules[0].rate_limit.max_per_minute"
    assert 0 < refused["retry_after_seconds"] <= 60
    assert results["report_db"] == [200, {"recorded": True, "cost_usd": 0}]
    # A failed action gives its window slot back.
    assert results["report_failed"][1]["recorded"] is True
    assert results["db_after_failed"][1]["allowed"] is True
    assert [body["allowed"] for body in results["billing"]] == [True, True, False]
    assert results["billing"][2]["limit"] == "rules[1].cost_ceiling.max_usd_per_task"
    assert results["deploy_bare"][1]["allowed"] is False
    assert "requires context approved = 'true', and the call carries nothing" in results["deploy_bare"][1]["reason"]
    assert results["deploy_ok"][1]["allowed"] is True
    assert results["unknown"][1]["limit"] == "default_effect"
    assert results["missing_action"][0] == 400
    assert "missing \"action\"" in results["missing_action"][1]["error"]["message"]
    assert results["bad_cost"][0] == 400
    assert results["unknown_call"][0] == 400
    assert "unknown call_id 'chk-999'" in results["unknown_call"][1]["error"]["message"]
    assert "requires context team = 'search'" in results["llm_bare"]
    assert results["llm_header"] == "answered"
    # Settled reports count in the summary's cost: two billing reports of 0.02.
    assert abs(result.summary["cost_usd"] - 0.04) < 0.0011


RESEARCH_POLICY = """
rules:
  - action: "search:*"
    behavioral_limits:
      max_consecutive_research: 3
      max_iterations_per_topic: 2
  - action: "llm:*"
"""

RESEARCH_AGENT = r"""
import json, os, urllib.request, openai
url, token = os.environ["MG_RUN_URL"], os.environ["MG_RUN_TOKEN"]

def search(query):
    body = json.dumps({"action": "search:web", "context": {"query": query}}).encode()
    request = urllib.request.Request(url + "/mg/v1/check", data=body, method="POST", headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    return answer.get("limit", "allowed").rsplit(".", 1)[-1]

results = [search("Rust async"), search("async rust!"), search("ASYNC Rust"), search("go generics"), search("zig comptime")]
openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "summarise"}], max_tokens=5)
results.append(search("zig comptime"))
print(json.dumps(results))
"""


def test_research_limits_through_check_api(tmp_path):
    result = run_mg(tmp_path, RESEARCH_POLICY, RESEARCH_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "allowed", "allowed", "max_iterations_per_topic", "allowed", "max_consecutive_research", "allowed",
    ]


OVER_REPORT_AGENT = r"""
import json, os, time, urllib.request
url, token = os.environ["MG_RUN_URL"], os.environ["MG_RUN_TOKEN"]
def post(path, body):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST", headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
print(post("/mg/v1/check", {"action": 5})[1]["error"]["message"], flush=True)
print(post("/mg/v1/check", {"action": "tool:x", "estimated_cost_usd": 1e9})[1]["error"]["message"], flush=True)
checked = post("/mg/v1/check", {"action": "tool:render", "estimated_cost_usd": 0.01})[1]
print(post("/mg/v1/report", {"call_id": checked["call_id"], "cost_usd": 5})[0], flush=True)
time.sleep(30)
"""


def test_report_above_estimate_stops_run_at_task_ceiling(tmp_path):
    policy = "rules:\n  - action: \"tool:*\"\n    cost_ceiling:\n      max_usd_per_task: 1.00\n"
    result = run_mg(tmp_path, policy, OVER_REPORT_AGENT, "--upstream", "simulate", "--kill-grace", "1")
    assert result.returncode == 125, result.stderr
    assert result.summary["stop_reason"] == "cost_ceiling:max_usd_per_task"
    lines = result.stdout.splitlines()
    assert lines[0] == "\"action\" must be a non-empty string on one line, such as \"db:write:users\""
    assert "from 0 to 1000000" in lines[1]
    assert "reported cost exceeded the check's estimate" in result.stderr
