"""Failure classes against a mock upstream written here: a stream whose usage never
comes is charged an estimate, and a call the upstream fails consumes no quota."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import run_mg


class MockOpenAI(BaseHTTPRequestHandler):
    """Serves chat completions without any usage; the first `failures` requests get a 500."""

    failures = 0
    seen = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        MockOpenAI.seen.append(body)
        if MockOpenAI.failures > 0:
            MockOpenAI.failures -= 1
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "upstream broke", "type": "server_error", "code": null}}')
            return
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for text in ["Hello", " there"]:
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                         "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            return
        reply = {"id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def mock_upstream():
    MockOpenAI.failures = 0
    MockOpenAI.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), MockOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50, stream=True)
print("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
print(reply.choices[0].message.content)
"""


def test_missing_usage_charged_estimate(tmp_path, mock_upstream):
    policy = "rules:\n  - action: \"llm:*\"\n"
    result = run_mg(tmp_path, policy, AGENT, "--upstream", f"openai={mock_upstream}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Hello", "there", "Hello"]
    calls = [line for line in result.audit if line["decision"] == "allow"]
    assert [call["estimated"] for call in calls] == [True, True]
    # The bound: the request's bytes as input tokens plus the 50-token output cap, at gpt-4o-mini prices.
    assert all(call["output_tokens"] == 50 for call in calls)
    assert all(float(call["cost_usd"]) > 0 for call in calls)
    assert "usage missing, charged the reserved bound" in calls[0]["reason"]
    # mg-run asked the upstream for the usage chunk it never got.
    assert MockOpenAI.seen[0]["stream_options"] == {"include_usage": True}


FAILING_AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
for attempt in range(2):
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"try {attempt}"}], max_tokens=5)
        print("answered")
    except openai.InternalServerError:
        print("upstream error")
    except openai.RateLimitError:
        print("refused")
"""


def test_failed_call_consumes_no_quota(tmp_path, mock_upstream):
    policy = """
rules:
  - action: "llm:*"
    rate_limit:
      max_per_minute: 1
      max_concurrent: 1
    cost_ceiling:
      max_usd_per_task: 0.0001
"""
    MockOpenAI.failures = 1
    result = run_mg(tmp_path, policy, FAILING_AGENT, "--upstream", f"openai={mock_upstream}")
    assert result.returncode == 0, result.stderr
    # The failed call gave back its window slot, its concurrency slot and its reservation.
    assert result.stdout.split() == ["upstream", "error", "answered"]
    assert result.summary["calls"] == 1


def test_unreachable_upstream_releases_reservation(tmp_path):
    policy = """
rules:
  - action: "llm:*"
    rate_limit:
      max_per_minute: 1
"""
    result = run_mg(tmp_path, policy, FAILING_AGENT, "--upstream", "openai=http://127.0.0.1:9/v1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["upstream", "error", "upstream", "error"]
    assert result.summary["calls"] == 0
    assert result.summary["cost_usd"] == 0


STORED_INPUT_AGENT = """
import openai
client = openai.OpenAI(max_retries=0)
try:
    client.responses.create(model="gpt-4.1-mini", input="go on", previous_response_id="resp_123", max_output_tokens=20)
    print("forwarded")
except openai.PermissionDeniedError as error:
    print(error.status_code, "previous_response_id" in error.message)
"""


def test_stored_responses_input_refused(tmp_path):
    result = run_mg(tmp_path, "rules:\n  - action: \"llm:*\"\n", STORED_INPUT_AGENT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["403", "True"]


class EchoingOpenAI(BaseHTTPRequestHandler):
    """Returns 401 quoting the key it was given, as providers do for a wrong key."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ECHO_AGENT = """
import openai
try:
    openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
except openai.AuthenticationError as error:
    print(error.message)
"""


def test_upstream_echo_of_real_key_is_hidden(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run_mg(tmp_path, "rules:\n  - action: \"llm:*\"\n", ECHO_AGENT, "--upstream", f"openai=http://127.0.0.1:{server.server_address[1]}/v1",
                        env={"OPENAI_API_KEY": "sk-tester-REALKEY-0123456789"})
        assert result.returncode == 0, result.stderr
        assert "sk-tester-REALKEY" not in result.stdout
        assert "Incorrect API key provided: ****" in result.stdout
    finally:
        server.shutdown()


class EchoingStream(BaseHTTPRequestHandler):
    """Streams a completion whose text quotes the key it was given, split across two writes."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        half = len(key) // 2

        def event(text):
            chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                     "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            return f"data: {json.dumps(chunk)}\n\n".encode()

        first = event(f"your key is {key}")
        cut = first.index(key.encode()) + half
        usage = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [],
                 "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for part in [first[:cut], first[cut:], f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()]:
            self.wfile.write(part)
            self.wfile.flush()
            time.sleep(0.05)


STREAM_ECHO_AGENT = """
import openai
stream = openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                                              max_tokens=5, stream=True)
print("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
"""


def test_streamed_echo_of_real_key_is_hidden(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingStream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    key = "sk-tester-REALKEY-0123456789"
    try:
        result = run_mg(tmp_path, "rules:\n  - action: \"llm:*\"\n", STREAM_ECHO_AGENT, "--upstream",
                        f"openai=http://127.0.0.1:{server.server_address[1]}/v1", env={"OPENAI_API_KEY": key})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "your key is " + "*" * len(key)
    finally:
        server.shutdown()
