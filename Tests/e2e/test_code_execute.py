"""code:execute: the tree's execs of interpreters are governed before they run (seccomp user
notification), and `mg-run exec` runs one program in a throwaway strict sandbox."""

import json
import os
import socket
import subprocess
import sys
import time

from conftest import MG_RUN, run_mg

LOOP = r"""
import json, subprocess
outcomes = []
for index in range(12):
    try:
        done = subprocess.run(["python3", "-c", f"print({index})"], capture_output=True, text=True)
        outcomes.append(done.stdout.strip())
    except PermissionError as error:
        outcomes.append(f"errno {error.errno}")
# The agent keeps running after a refused exec.
print(json.dumps(outcomes))
"""


def test_code_execute_hourly_limit_eacces(tmp_path):
    policy = 'rules:\n  - action: "llm:*"\n  - action: "code:execute"\n    rate_limit: {max_per_hour: 10}\n'
    result = run_mg(tmp_path, policy, LOOP, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert outcomes == [str(index) for index in range(10)] + ["errno 13", "errno 13"]
    executions = [entry for entry in result.audit if entry["action"] == "code:execute"]
    assert [entry["decision"] for entry in executions] == ["allow"] * 10 + ["deny"] * 2
    assert "(python)" in executions[0]["reason"]
    assert "max_per_hour (10) reached" in executions[-1]["reason"]
    assert "refused with EACCES" in executions[-1]["reason"]


LANGUAGES = r"""
import json, subprocess
outcomes = {}
for name, command in [("shell", ["sh", "-c", "echo shell"]), ("python", ["python3", "-c", "print('python')"])]:
    try:
        outcomes[name] = subprocess.run(command, capture_output=True, text=True).stdout.strip()
    except PermissionError as error:
        outcomes[name] = f"errno {error.errno}"
# A script whose #! line names the interpreter directly is seen through that line.
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "script.sh")
with open(path, "w") as script:
    script.write("#!/bin/sh\necho script\n")
os.chmod(path, 0o755)
try:
    outcomes["script"] = subprocess.run([path], capture_output=True, text=True).stdout.strip()
except PermissionError as error:
    outcomes["script"] = f"errno {error.errno}"
print(json.dumps(outcomes))
"""


def test_code_execute_language_condition(tmp_path):
    policy = """
default_effect: allow
rules:
  - action: "llm:*"
  - action: "code:execute"
    effect: deny
    conditions: ["code.language == 'shell'"]
"""
    result = run_mg(tmp_path, policy, "import os\n" + LANGUAGES, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"shell": "errno 13", "python": "python", "script": "errno 13"}
    denied = [entry["reason"] for entry in result.audit if entry["action"] == "code:execute" and entry["decision"] == "deny"]
    assert len(denied) == 2 and all("(shell)" in reason for reason in denied)
    assert any("script.sh" in reason for reason in denied)


def test_code_execute_wrapper_counts_once(tmp_path):
    # bash running python: one code execution of shell; the python it starts is part of it.
    policy = 'rules:\n  - action: "llm:*"\n  - action: "code:execute"\n    rate_limit: {max_per_task: 1}\n'
    script = 'import subprocess\nprint(subprocess.run(["bash", "-c", "python3 -c \\"print(7)\\"; sh -c \\"echo 8\\""], capture_output=True, text=True).stdout.split())\n'
    result = run_mg(tmp_path, policy, script, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['7', '8']"
    assert [entry["decision"] for entry in result.audit if entry["action"] == "code:execute"] == ["allow"]


SCRIPT_AGENT = """#!/bin/sh
n=0
for i in 1 2 3 4 5; do python3 -c 'print(1)' >/dev/null 2>&1 && n=$((n+1)); done
echo "$n"
"""


def test_code_execute_script_agent_metered(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text('rules:\n  - action: "llm:*"\n  - action: "code:execute"\n    rate_limit: {max_per_task: 3}\n')
    # The agent is a shell script: the children it starts count.
    agent = tmp_path / "agent.sh"
    agent.write_text(SCRIPT_AGENT)
    agent.chmod(0o755)
    completed = subprocess.run([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--", str(agent)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "3"
    # An agent that execs itself stays the agent: its children still count.
    selfexec = tmp_path / "selfexec.py"
    selfexec.write_text("import os, subprocess, sys\n"
                        "if len(sys.argv) == 1:\n    os.execv(sys.executable, [sys.executable, sys.argv[0], 'again'])\n"
                        "ran = 0\nfor _ in range(5):\n    try:\n        subprocess.run(['python3', '-c', 'pass'], check=True)\n        ran += 1\n"
                        "    except PermissionError:\n        pass\nprint(ran)\n")
    completed = subprocess.run([MG_RUN, "--policy", str(policy), "--upstream", "simulate", "--", sys.executable, str(selfexec)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "3"


def test_code_execute_links_followed(tmp_path):
    os.symlink(os.path.realpath(sys.executable), tmp_path / "renamed")
    (tmp_path / "inner").write_text(f"#!{tmp_path / 'renamed'}\nprint('inner')\n")
    (tmp_path / "outer").write_text(f"#!{tmp_path / 'inner'}\n")
    for name in ["inner", "outer"]:
        (tmp_path / name).chmod(0o755)
    # Also a descriptor of the interpreter run as /proc/self/fd/N and /dev/fd/N, and a link that exists
    # only in the sandbox's private /run.
    script = (f"import os, subprocess, sys\n"
              f"fd = os.open(os.path.realpath(sys.executable), os.O_RDONLY)\n"
              f"os.symlink(os.path.realpath(sys.executable), '/run/pyx')\n"
              f"commands = [[{str(tmp_path / 'renamed')!r}, '-c', 'pass'], [{str(tmp_path / 'inner')!r}], [{str(tmp_path / 'outer')!r}],\n"
              f"            [f'/proc/self/fd/{{fd}}', '-c', 'pass'], [f'/dev/fd/{{fd}}', '-c', 'pass'], ['/run/pyx', '-c', 'pass']]\n"
              "for command in commands:\n"
              "    try:\n        subprocess.run(command, check=True, pass_fds=[fd])\n        print('ran')\n    except PermissionError:\n        print('refused')\n")
    policy = 'default_effect: allow\nrules:\n  - action: "llm:*"\n  - action: "code:execute"\n    effect: deny\n'
    result = run_mg(tmp_path, policy, script, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused"] * 6


def timed_exec(*arguments):
    started = time.monotonic()
    completed = subprocess.run([MG_RUN, "exec", *arguments], capture_output=True, text=True, timeout=30)
    return completed, time.monotonic() - started


def test_exec_timeout_busy_programs():
    for code in ["x = 10**(10**9)", "while True: pass"]:
        completed, elapsed = timed_exec("--timeout", "2s", "--", sys.executable, "-c", code)
        assert completed.returncode == 124, completed.stderr
        assert "at the 2.0s timeout" in completed.stderr
        assert elapsed <= 2.5, f"{code}: {elapsed:.2f} s"


def test_exec_timeout_kills_tree(tmp_path):
    marker = f"mg-exec-orphan-{os.getpid()}"
    # A setsid'd shell whose command line carries the marker, so a survivor can be found afterwards.
    code = f"import subprocess, time\nsubprocess.Popen(['sh', '-c', 'sleep 300; : {marker}'], start_new_session=True)\ntime.sleep(300)"
    completed, elapsed = timed_exec("--timeout", "1s", "--", sys.executable, "-c", code)
    assert completed.returncode == 124, completed.stderr
    time.sleep(0.3)
    survivors = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert survivors == []


SANDBOX_PROBE = r"""
import ctypes, json, os, socket, sys
home = os.environ["HOME"]
seen = {"cwd_files": os.path.exists("marker.txt"), "scratch": sorted(os.listdir(home)), "home": home, "tmpdir": os.environ["TMPDIR"]}
open(home + "/scratch.txt", "w").write("ok")
seen["scratch_writable"] = open(home + "/scratch.txt").read()
for path in ["marker.txt", "/etc/mg-run-probe", "/root/mg-run-probe", "/tmp/mg-run-probe"]:
    try:
        open(path, "a").close()
        seen[path] = "writable"
    except OSError as error:
        seen[path] = error.errno
seen["interfaces"] = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
seen["processes"] = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    seen["netlink"] = "opened"
except OSError as error:
    seen["netlink"] = error.errno
try:
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.connect(sys.argv[1])
    seen["unix"] = "connected"
except OSError as error:
    seen["unix"] = error.errno
left, right = socket.socketpair()
left.send(b"x")
seen["socketpair"] = right.recv(1).decode()
libc = ctypes.CDLL(None, use_errno=True)
seen["setuid"] = [libc.setuid(1000), ctypes.get_errno()]
seen["keys"] = [name for name in os.environ if "KEY" in name or "TOKEN" in name]
print(json.dumps(seen))
"""


def test_exec_read_only_no_network(tmp_path):
    (tmp_path / "marker.txt").write_text("host file")
    (tmp_path / "probe.py").write_text(SANDBOX_PROBE)
    # A Unix socket file on the host, such as a daemon's, that the program must not reach.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "daemon.sock"))
    listener.listen(1)
    with listener:
        completed = subprocess.run([MG_RUN, "exec", "--", sys.executable, str(tmp_path / "probe.py"), str(tmp_path / "daemon.sock")],
                                   capture_output=True, text=True, timeout=30, cwd=tmp_path,
                                   env={**os.environ, "OPENAI_API_KEY": "sk-real-key-must-not-pass"})
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout)
    assert seen["cwd_files"] is True
    assert seen["home"].startswith("/tmp/mg-run-exec-")
    assert seen["tmpdir"] == seen["home"]
    assert seen["scratch"] == [], "an empty scratch directory"
    assert seen["scratch_writable"] == "ok"
    assert not os.path.exists(seen["home"]), "the scratch directory is removed afterwards"
    EROFS, EPERM, EACCES = 30, 1, 13
    assert seen["marker.txt"] == EROFS
    assert seen["/etc/mg-run-probe"] == EROFS
    assert seen["/root/mg-run-probe"] == EROFS
    assert seen["/tmp/mg-run-probe"] == EROFS
    assert seen["unix"] == EACCES
    assert seen["socketpair"] == "x"
    assert seen["interfaces"] == ["lo"]
    assert seen["processes"] == [1, 2], "only the init and the program"
    assert seen["netlink"] == EACCES, "the strict profile allows IPv4 and IPv6 sockets only"
    assert seen["setuid"] == [-1, EPERM]
    assert seen["keys"] == []


def test_exec_status_and_bad_options(tmp_path):
    completed = subprocess.run([MG_RUN, "exec", "--", sys.executable, "-c", "raise SystemExit(7)"], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 7
    completed = subprocess.run([MG_RUN, "exec", "--timeout", "soon", "--", "true"], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 2
    assert "invalid --timeout 'soon'; use a duration such as 500ms, 5s or 2m" in completed.stderr
    completed = subprocess.run([MG_RUN, "exec", "--profile", "lax", "--", "true"], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 2
    assert "unknown sandbox profile 'lax'; use agent, strict, or the path of a .seccomp file" in completed.stderr
    bad = tmp_path / "bad.seccomp"
    bad.write_text("default errno ENOSYS\nallow read\nallow read\n")
    completed = subprocess.run([MG_RUN, "exec", "--profile", str(bad), "--", "true"], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 2
    assert f"invalid seccomp profile {bad}: line 3: read already has a rule on line 2" in completed.stderr


def test_exec_inside_run_refused(tmp_path):
    script = f"import subprocess\ndone = subprocess.run([{MG_RUN!r}, 'exec', '--', 'true'], capture_output=True, text=True)\nprint(done.returncode)\nprint(done.stderr)\n"
    result = run_mg(tmp_path, 'rules:\n  - action: "llm:*"\n', script, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.split("\n", 1)
    assert status == "70"
    assert "mg-run exec cannot build its sandbox inside a governed run" in message
