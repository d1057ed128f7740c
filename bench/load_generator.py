#!/usr/bin/env python3
"""Load generator for bench/proxy-overhead.

It runs as the command under mg-run, so it finds the metering proxy in
OPENAI_BASE_URL and the run token in OPENAI_API_KEY. The direct simulator and
nginx URLs come as arguments. Each round measures sequential latency over one
keep-alive connection per target, switching target every --batch calls, and then
throughput with wrk, one target after another. The target order rotates every
round, so that drift of the machine affects every target alike.

When the load is over it writes the results as JSON, creates --done-file and
waits for --ack-file, so the parent script can read the peak RSS of mg-run
while mg-run still runs.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse

# A small OpenAI chat request. With max_tokens 16 the simulator returns about
# 470 bytes, so the measurement is dominated by per-request overhead.
REQUEST_BODY = json.dumps({
    "model": "gpt-4o-mini",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
}).encode()

WRK_SCRIPT = """\
-- POST the benchmark request and print the summary as one JSON line.
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("OPENAI_API_KEY")

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%%d,"duration_us":%%d,"connect_errors":%%d,"read_errors":%%d,' ..
    '"write_errors":%%d,"status_errors":%%d,"timeouts":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class LoadError(Exception):
    """A target returned an error or could not be reached."""


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direct", required=True, help="simulator base URL, ending in /v1")
    parser.add_argument("--nginx", required=True, help="nginx base URL, ending in /v1")
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--calls", type=int, required=True, help="sequential calls per target per round")
    parser.add_argument("--batch", type=int, required=True, help="sequential calls to one target before switching to the next")
    parser.add_argument("--warmup-calls", type=int, required=True, help="unmeasured calls per target before each round")
    parser.add_argument("--duration", type=int, required=True, help="wrk seconds per target per round")
    parser.add_argument("--connections", type=int, required=True, help="wrk connections")
    parser.add_argument("--threads", type=int, required=True, help="wrk threads")
    parser.add_argument("--workdir", required=True, help="directory for the wrk script")
    parser.add_argument("--results", required=True, help="JSON file to write")
    parser.add_argument("--done-file", required=True)
    parser.add_argument("--ack-file", required=True)
    parser.add_argument("--ack-timeout", type=float, default=60, help="seconds to wait for --ack-file")
    return parser.parse_args()


class LatencyClient:
    """One keep-alive connection to a target that times sequential chat completion calls."""

    def __init__(self, base_url, token):
        url = urllib.parse.urlsplit(base_url)
        self.base_url = base_url
        self.path = url.path + "/chat/completions"
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)

    def measure(self, calls):
        """Send `calls` requests one after another and return each latency in microseconds."""
        samples = []
        for _ in range(calls):
            started = time.perf_counter_ns()
            # http.client sends a bytes body in the same send() as the headers, so Nagle's algorithm adds no delay.
            self.connection.request("POST", self.path, body=REQUEST_BODY, headers=self.headers)
            response = self.connection.getresponse()
            body = response.read()
            samples.append((time.perf_counter_ns() - started) / 1000)
            if response.status != 200:
                raise LoadError(f"POST {self.base_url}/chat/completions returned {response.status}: {body[:300]!r}")
            if response.will_close:
                raise LoadError(f"{self.base_url} closed the keep-alive connection; the latency numbers would include reconnects")
        return samples

    def close(self):
        self.connection.close()


def measure_latency(clients, order, calls, batch):
    """Time `calls` sequential calls per target, switching target every `batch` calls.

    Switching often spreads slow drift of the machine (CPU frequency, noisy
    neighbours) evenly over the targets. On a shared 2-CPU VM, the p50 of
    whole 2000-call blocks to the same target differed by up to 100 us.
    """
    samples = {name: [] for name in order}
    done = 0
    while done < calls:
        count = min(batch, calls - done)
        for name in order:
            samples[name].extend(clients[name].measure(count))
        done += count
    return samples


def measure_throughput(base_url, args):
    """Run wrk against the target and return its summary (requests, errors, latency percentiles)."""
    command = [
        "wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
        "--timeout", "10s", "-s", os.path.join(args.workdir, "post.lua"), base_url + "/chat/completions",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 60)
    if completed.returncode != 0:
        raise LoadError(f"wrk failed with status {completed.returncode} on {base_url}: {completed.stderr.strip()}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("WRK_RESULT ")]
    if not lines:
        raise LoadError(f"wrk printed no WRK_RESULT line for {base_url}; its output was:\n{completed.stdout}")
    summary = json.loads(lines[-1].removeprefix("WRK_RESULT "))
    summary["requests_per_second"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["errors"] = sum(summary[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return summary


def write_wrk_script(workdir):
    # The body is JSON without "]]", so a Lua long bracket string contains it unchanged.
    with open(os.path.join(workdir, "post.lua"), "w") as file:
        file.write(WRK_SCRIPT % {"body": REQUEST_BODY.decode()})


def wait_for_ack(done_file, ack_file, timeout):
    """Tell the parent that the load is over, and keep mg-run running until the parent has read its peak RSS."""
    with open(done_file, "w") as file:
        file.write("done\n")
    deadline = time.monotonic() + timeout
    while not os.path.exists(ack_file):
        if time.monotonic() > deadline:
            print(f"load_generator: timed out after {timeout:.0f} s waiting for {ack_file}; exiting without it", file=sys.stderr)
            return
        time.sleep(0.01)


def main():
    args = parse_arguments()
    token = os.environ.get("OPENAI_API_KEY")
    mg_run_url = os.environ.get("OPENAI_BASE_URL")
    if not token or not mg_run_url:
        sys.exit("load_generator: OPENAI_BASE_URL or OPENAI_API_KEY is missing; run it as the command of mg-run")
    targets = {"direct": args.direct, "nginx": args.nginx, "mg-run": mg_run_url}
    names = list(targets)
    write_wrk_script(args.workdir)

    results = {
        name: {"latency_us": [], "round_p50_us": [], "throughput": [], "requests_sent": 0, "requests_before_round": []}
        for name in names
    }
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in names:
            # mg-run's per-call bookkeeping grows with the calls it has admitted, so the report shows this count.
            results[name]["requests_before_round"].append(results[name]["requests_sent"])

        # New connections every round, because servers close idle keep-alive connections during
        # long throughput phases (nginx after 75 s by default, libmicrohttpd after mg-run's 600 s).
        # The unmeasured warm-up calls open them and load code paths.
        clients = {name: LatencyClient(targets[name], token) for name in names}
        for name in order:
            clients[name].measure(args.warmup_calls)
            results[name]["requests_sent"] += args.warmup_calls
        samples = measure_latency(clients, order, args.calls, args.batch)
        for client in clients.values():
            client.close()
        for name in order:
            results[name]["latency_us"].extend(samples[name])
            results[name]["round_p50_us"].append(statistics.median(samples[name]))
            results[name]["requests_sent"] += args.calls
            print(f"load_generator: round {round_index + 1} latency {name}: p50 {statistics.median(samples[name]):.0f} us",
                  file=sys.stderr, flush=True)

        for name in order:
            summary = measure_throughput(targets[name], args)
            results[name]["throughput"].append(summary)
            results[name]["requests_sent"] += summary["requests"]
            print(f"load_generator: round {round_index + 1} throughput {name}: {summary['requests_per_second']:.0f} req/s, "
                  f"{summary['errors']} errors", file=sys.stderr, flush=True)
            if summary["errors"]:
                raise LoadError(f"wrk saw {summary['errors']} errors on {name} ({targets[name]}): {summary}")

    with open(args.results, "w") as file:
        json.dump(results, file)
    wait_for_ack(args.done_file, args.ack_file, args.ack_timeout)


if __name__ == "__main__":
    try:
        main()
    except (LoadError, OSError, subprocess.TimeoutExpired) as error:
        sys.exit(f"load_generator: {error}")
