"""Windows and ceilings under concurrent calls from the real openai SDK."""

import json

from conftest import run_mg

CONCURRENT_AGENT = """
import concurrent.futures, json, sys, openai
CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else {calls}

def one(index):
    statuses = []
    client = openai.OpenAI(max_retries={retries}, http_client=openai.DefaultHttpxClient(event_hooks={{"response": [lambda r: statuses.append(r.status_code)]}}))
    try:
        reply = client.chat.completions.create(model="gpt-4o", messages=[{{"role": "user", "content": "call %d " % index + "x" * {size}}}])
        return {{"ok": True, "statuses": statuses}}
    except openai.RateLimitError as error:
        return {{"ok": False, "error": "RateLimitError", "code": error.code, "statuses": statuses,
                 "should_retry": error.response.headers.get("x-should-retry")}}
    except openai.APIError as error:
        return {{"ok": False, "error": type(error).__name__, "statuses": statuses}}

with concurrent.futures.ThreadPoolExecutor(CALLS) as pool:
    print(json.dumps(list(pool.map(one, range(CALLS)))))
"""


def test_minute_window_admits_exactly_limit(tmp_path, simulator):
    policy = """
rules:
  - action: "llm:*"
    rate_limit: {max_per_minute: 10}
"""
    agent = CONCURRENT_AGENT.format(calls=30, retries=0, size=10)
    result = run_mg(tmp_path, policy, agent, "--upstream", f"openai={simulator.url}/v1")
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert sum(1 for outcome in outcomes if outcome["ok"]) == 10
    refused = [outcome for outcome in outcomes if not outcome["ok"]]
    assert len(refused) == 20
    assert all(outcome["error"] == "RateLimitError" for outcome in refused)
    assert all(outcome["code"] == "rate_limit_exceeded" for outcome in refused)
    assert simulator.stats().get("/v1/chat/completions") == 10
    assert result.summary["denied"] == 20


def test_task_ceiling_never_overshoots(tmp_path, simulator):
    # A gpt-4o call here settles at about 0.003 USD but reserves more, so 0.02 fits only a few.
    ceiling = 0.02
    policy = f"""
rules:
  - action: "llm:*"
    cost_ceiling: {{max_usd_per_task: {ceiling}}}
"""
    agent = CONCURRENT_AGENT.format(calls=40, retries=2, size=400)
    result = run_mg(tmp_path, policy, agent, "--upstream", f"openai={simulator.url}/v1", "--kill-grace", "5")
    outcomes = json.loads(result.stdout) if result.stdout.strip() else None
    assert result.summary["outcome"] == "stopped"
    assert result.summary["stop_reason"] == "cost_ceiling:max_usd_per_task"
    assert result.returncode == 125
    settled = [line for line in result.audit if line["decision"] == "allow"]
    assert 0 < len(settled) < 40
    assert sum(line["cost_usd"] for line in settled) <= ceiling
    assert result.summary["cost_usd"] <= ceiling
    # Every admitted call reached the upstream exactly once.
    assert simulator.stats().get("/v1/chat/completions") == len(settled)
    quota_refusals = [line for line in result.audit if line["decision"] == "deny" and "is spent" in line["reason"]]
    assert quota_refusals
    if outcomes is not None:
        # The agent may be killed before it prints; when it does, no call retried a final refusal.
        for outcome in outcomes:
            if not outcome["ok"] and outcome.get("code") == "insufficient_quota":
                assert outcome["should_retry"] == "false"
                assert outcome["statuses"][-1] == 429
                assert outcome["statuses"].count(429) == len(outcome["statuses"])


CONCLUDE_AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
texts = []
for index in range(3):
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "step %d" % index}])
    texts.append(reply.choices[0].message.content)
stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "streamed"}], stream=True)
texts.append("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
print(texts[2] == "Please conclude now." and texts[3] == "Please conclude now.")
"""


def test_graceful_conclude_answers_with_message(tmp_path):
    policy = """
rules:
  - action: "llm:*"
    rate_limit: {max_per_minute: 2}
on_limit_exceeded:
  action: graceful_conclude
  message_to_agent: "Please conclude now."
"""
    result = run_mg(tmp_path, policy, CONCLUDE_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    decisions = [line["decision"] for line in result.audit]
    assert decisions == ["allow", "allow", "conclude", "conclude"]
    assert all(line["cost_usd"] == 0 for line in result.audit if line["decision"] == "conclude")
    assert result.summary["concluded"] == 2


UNPRICED_AGENT = """
import openai
client = openai.OpenAI(max_retries=2)
try:
    client.chat.completions.create(model="gpt-9-turbo", messages=[{"role": "user", "content": "hi"}])
except openai.PermissionDeniedError as error:
    print(error.status_code, error.body["message"])
"""


def test_unpriced_model_refused(tmp_path):
    result = run_mg(tmp_path, ALLOW_ALL_TEXT, UNPRICED_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("403 model 'gpt-9-turbo' has no price")
    assert "prices.yaml" in result.stdout
    assert len(result.audit) == 1


ALLOW_ALL_TEXT = """
rules:
  - action: "llm:*"
"""


QUEUE_AGENT = """
import concurrent.futures, json, time, openai
client = openai.OpenAI(max_retries=0)
def one(index):
    started = time.monotonic()
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "queued %d" % index}])
        return ["ok", time.monotonic() - started]
    except openai.RateLimitError as error:
        return [error.code, time.monotonic() - started]
with concurrent.futures.ThreadPoolExecutor(3) as pool:
    print(json.dumps(list(pool.map(one, range(3)))))
"""


def test_queue_holds_calls_until_window_reopens(tmp_path):
    policy = """
rules:
  - action: "llm:*"
    rate_limit: {max_per_second: 1}
on_limit_exceeded: {action: queue, queue_timeout_seconds: 10}
"""
    result = run_mg(tmp_path, policy, QUEUE_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert [outcome[0] for outcome in outcomes] == ["ok", "ok", "ok"]
    waits = sorted(outcome[1] for outcome in outcomes)
    # One call per second: the third waited about two seconds, none was denied.
    assert waits[2] >= 1.8
    assert result.summary["denied"] == 0
    assert [line["decision"] for line in result.audit] == ["allow", "allow", "allow"]


def test_queue_denies_at_timeout(tmp_path):
    policy = """
rules:
  - action: "llm:*"
    rate_limit: {max_per_minute: 1}
on_limit_exceeded: {action: queue, queue_timeout_seconds: 1}
"""
    result = run_mg(tmp_path, policy, QUEUE_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    outcomes = sorted(json.loads(result.stdout), key=lambda outcome: outcome[1])
    assert outcomes[0][0] == "ok"
    assert [outcome[0] for outcome in outcomes[1:]] == ["rate_limit_exceeded", "rate_limit_exceeded"]
    assert all(0.9 <= outcome[1] < 3 for outcome in outcomes[1:])
    assert result.summary["denied"] == 2


RESPONSES_CONCLUDE_AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
client.responses.create(model="gpt-4o-mini", input="first")
plain = client.responses.create(model="gpt-4o-mini", input="second")
streamed = ""
for event in client.responses.create(model="gpt-4o-mini", input="third", stream=True):
    if event.type == "response.output_text.delta":
        streamed += event.delta
print(plain.output_text == "Wrap up." and streamed == "Wrap up.")
"""


def test_graceful_conclude_in_responses_api(tmp_path):
    policy = """
rules:
  - action: "llm:*"
    rate_limit: {max_per_minute: 1}
on_limit_exceeded: {action: graceful_conclude, message_to_agent: "Wrap up."}
"""
    result = run_mg(tmp_path, policy, RESPONSES_CONCLUDE_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert [line["decision"] for line in result.audit] == ["allow", "conclude", "conclude"]


class FailingUpstream:
    """An OpenAI-shaped upstream on loopback that fails every call with a 500 and counts them."""

    def __init__(self):
        import http.server
        import threading
        upstream = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                upstream.requests += 1
                body = b'{"error": {"message": "upstream broke", "type": "server_error", "param": null, "code": null}}'
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


RETRY_AGENT = """
import openai
client = openai.OpenAI(max_retries=4)
try:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "same request"}])
except openai.APIStatusError as error:
    print(type(error).__name__, error.status_code)
"""


def test_retries_of_failing_request_limited(tmp_path):
    upstream = FailingUpstream()
    try:
        policy = """
rules:
  - action: "llm:*"
    rate_limit: {max_retries: 1}
"""
        result = run_mg(tmp_path, policy, RETRY_AGENT, "--upstream", f"openai={upstream.url}/v1")
    finally:
        upstream.close()
    assert result.returncode == 0, result.stderr
    # The first attempt and one retry reach the upstream; the SDK's next retry is denied with 403.
    assert upstream.requests == 2
    assert result.stdout.strip() == "PermissionDeniedError 403"
    assert [line["status"] for line in result.audit] == [500, 500, 403]
    assert "max_retries" in result.audit[-1]["reason"]


BUDGET_AGENT = """
import time, openai
client = openai.OpenAI(max_retries=0)
for index in range(200):
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "step %d" % index}])
time.sleep(30)
"""


def test_budget_critical_threshold_kills_run(tmp_path):
    policy = """
rules:
  - action: "llm:*"
budget:
  daily_limit_usd: 0.10
  warning_threshold_percent: 20
  critical_threshold_percent: 50
  on_warning: [notify_ops]
  on_critical: [kill]
"""
    result = run_mg(tmp_path, policy, BUDGET_AGENT, "--upstream", "simulate", "--kill-grace", "1")
    assert result.returncode == 125
    assert result.summary["stop_reason"] == "budget:critical"
    assert 0.05 <= result.summary["cost_usd"] <= 0.10
    alerts = [line for line in result.audit if line["decision"] == "alert"]
    assert [line["action"] for line in alerts] == ["budget:warning", "budget:critical"]
    assert "notify_ops" in alerts[0]["reason"]
    assert "budget threshold reached; notifying operators" in result.stderr


CONCLUSION_AGENT = """
import concurrent.futures, time, openai
client = openai.OpenAI(max_retries=0)
obey = OBEY
def worker(index):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "work %d" % index}])
        if obey and reply.choices[0].message.content == "Finish now.":
            return
        time.sleep(0.2)
with concurrent.futures.ThreadPoolExecutor(6) as pool:
    list(pool.map(worker, range(6)))
print("done")
"""

CONCLUSION_POLICY = """
rules:
  - action: "llm:*"
    behavioral_limits: {require_conclusion_after: 4}
on_limit_exceeded: {action: deny, message_to_agent: "Finish now."}
"""


def test_obedient_concurrent_agent_not_stopped(tmp_path):
    result = run_mg(tmp_path, CONCLUSION_POLICY, CONCLUSION_AGENT.replace("OBEY", "True"), "--upstream", "simulate",
                    "--simulate-latency-ms", "300")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert result.summary["outcome"] == "completed"
    assert [line["decision"] for line in result.audit].count("allow") == 4


def test_agent_ignoring_conclusions_is_stopped(tmp_path):
    result = run_mg(tmp_path, CONCLUSION_POLICY, CONCLUSION_AGENT.replace("OBEY", "False"), "--upstream", "simulate",
                    "--kill-grace", "1")
    assert result.returncode == 125
    assert result.summary["stop_reason"] == "behavioral_limits:require_conclusion_after"
    assert 10 <= result.summary["duration_s"] < 20
