"""A research agent that never decides it is done.

It behaves like an unattended autonomous agent: it plans, "searches",
summarizes, criticizes its own summary, decides it needs more sources, and
starts again, carrying every step in a growing context. It also starts a
background "crawler" in its own session (setsid), the way agents leave
helper processes behind. Nothing in it stops the loop but mg-run: a stop,
or a reply that tells it to write its final answer (a policy's graceful
conclusion), which it obeys as a model-driven agent would.

Run it under mg-run (no key needed with the simulator):

    mg-run --policy profiles/basic.yaml --upstream simulate -- python3 examples/runaway_research.py

Environment:
    RUNAWAY_MODEL    model to call (default gpt-4o)
    RUNAWAY_MARKER   a word put in the crawler's command line, so tests can find it
"""

import os
import subprocess
import sys
import time

import openai

MODEL = os.environ.get("RUNAWAY_MODEL", "gpt-4o")
MARKER = os.environ.get("RUNAWAY_MARKER", "runaway-crawler")
STEPS = ["plan the next research step", "search for sources", "summarize the sources", "criticize the summary and find gaps"]


def start_crawler():
    """Start a detached helper that outlives its parent unless the whole tree is killed."""
    code = "import time\nwhile True: time.sleep(1)"
    return subprocess.Popen([sys.executable, "-c", code, MARKER], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fake_search_results(iteration):
    """About 6 KB of page text per search, as a real agent pastes into its context."""
    sentence = f"Source {iteration}: findings on the topic, with details that seem to need one more source to confirm. "
    return sentence * 60


def main():
    client = openai.OpenAI(max_retries=2)
    crawler = start_crawler()
    print(f"runaway: started crawler pid {crawler.pid} in its own session", flush=True)
    messages = [{"role": "system", "content": "You are a thorough research agent. Never stop until the report is perfect."},
                {"role": "user", "content": "Write the definitive report on autonomous agent cost control."}]
    iteration = 0
    while True:
        iteration += 1
        step = STEPS[iteration % len(STEPS)]
        if step == "search for sources":
            messages.append({"role": "user", "content": fake_search_results(iteration)})
        messages.append({"role": "user", "content": f"Iteration {iteration}: {step}."})
        try:
            reply = client.chat.completions.create(model=MODEL, messages=messages)
        except openai.APIError as error:
            # Like many agents, it treats every error as transient and tries again.
            print(f"runaway: iteration {iteration} failed ({type(error).__name__}: {error}); retrying", flush=True)
            time.sleep(0.5)
            continue
        text = reply.choices[0].message.content
        if "final answer" in text.lower():
            print(f"runaway: iteration {iteration}: told to conclude; writing the final report and exiting", flush=True)
            return
        messages.append({"role": "assistant", "content": text})
        usage = reply.usage
        print(f"runaway: iteration {iteration}: {step}; context {len(messages)} messages, "
              f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens; more sources needed", flush=True)


if __name__ == "__main__":
    main()
