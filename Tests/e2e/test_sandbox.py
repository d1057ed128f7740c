"""Sandbox choices: the namespaces the agent gets, a read-only root with writable paths, the strict
profile, running without a sandbox only when asked, and refusing to start when it cannot be built."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import MG_RUN, run_mg

POLICY = 'rules:\n  - action: "llm:*"\n'

NAMESPACES = r"""
import json, os
print(json.dumps({kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ["pid", "mnt", "ipc", "uts", "net"]}))
"""


def host_namespaces():
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ["pid", "mnt", "ipc", "uts", "net"]}


def test_agent_namespaces_all_new(tmp_path):
    result = run_mg(tmp_path, POLICY, NAMESPACES, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    inside = json.loads(result.stdout)
    host = host_namespaces()
    assert [kind for kind in host if inside[kind] == host[kind]] == []


def test_no_sandbox_host_namespaces(tmp_path):
    result = run_mg(tmp_path, POLICY, NAMESPACES, "--upstream", "simulate", "--no-sandbox")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == host_namespaces()
    assert "running the agent WITHOUT a sandbox, as asked (--no-sandbox)" in result.stderr


def test_no_sandbox_profile_conflict(tmp_path):
    policy = 'run:\n  sandbox: {profile: agent}\n' + POLICY
    result = run_mg(tmp_path, policy, "print('ran')", "--upstream", "simulate", "--no-sandbox")
    assert result.returncode == 2
    assert "--no-sandbox conflicts with run.sandbox.profile: agent in" in result.stderr
    assert result.stdout == ""


def test_sandbox_failure_refuses_start(tmp_path):
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is missing; install util-linux")
    (tmp_path / "policy.yaml").write_text(POLICY)
    # Without CAP_SYS_ADMIN, mg-run cannot open its proxy inside the agent's network namespace.
    command = [setpriv, "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", MG_RUN, "--policy", str(tmp_path / "policy.yaml"),
               "--upstream", "simulate", "--", "sh", "-c", "echo ran"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 70
    assert completed.stdout == ""
    assert "network proxy_only needs root (CAP_SYS_ADMIN)" in completed.stderr
    assert "pass --network host" in completed.stderr


WRITES = r"""
import json, os, sys
seen = {"tmpdir": os.environ["TMPDIR"]}
for path in sys.argv[1:] + [os.environ["TMPDIR"] + "/probe.txt"]:
    try:
        with open(path, "a") as handle:
            handle.write("x")
        seen[path] = "writable"
    except OSError as error:
        seen[path] = error.errno
print(json.dumps(seen))
"""


def test_writable_paths_read_only_root(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    policy = f'run:\n  sandbox:\n    writable: ["{work}"]\n' + POLICY
    (tmp_path / "policy.yaml").write_text(policy)
    (tmp_path / "writes.py").write_text(WRITES)
    targets = [str(work / "out.txt"), str(other / "out.txt"), "/tmp/probe.txt", "/var/tmp/probe.txt", "/root/probe.txt"]
    completed = subprocess.run([MG_RUN, "--policy", str(tmp_path / "policy.yaml"), "--upstream", "simulate", "--",
                                sys.executable, str(tmp_path / "writes.py"), *targets], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout)
    EROFS = 30
    assert seen[targets[0]] == "writable"
    assert (work / "out.txt").read_text() == "x"
    assert [seen[target] for target in targets[1:]] == [EROFS] * 4
    # A private TMPDIR: writable, empty, and gone with the run.
    tmpdir = seen["tmpdir"]
    assert tmpdir.startswith("/tmp/mg-run-")
    assert seen[tmpdir + "/probe.txt"] == "writable"
    assert not os.path.exists(tmpdir)


STRICT = r"""
import json, os, socket, urllib.request
seen = {}
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    seen["unix"] = "opened"
except OSError as error:
    seen["unix"] = error.errno
request = urllib.request.Request(os.environ["MG_RUN_URL"] + "/v1/models", headers={"Authorization": "Bearer " + os.environ["MG_RUN_TOKEN"]})
seen["proxy"] = urllib.request.urlopen(request, timeout=5).status
print(json.dumps(seen))
"""


def test_strict_profile_unix_sockets(tmp_path):
    policy = 'run:\n  sandbox: {profile: strict}\n' + POLICY
    result = run_mg(tmp_path, policy, STRICT, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"unix": 13, "proxy": 200}


def test_missing_profile_file_named(tmp_path):
    policy = f'run:\n  sandbox: {{profile: "{tmp_path}/missing.seccomp"}}\n' + POLICY
    result = run_mg(tmp_path, policy, "print('ran')", "--upstream", "simulate")
    assert result.returncode == 2
    assert f"cannot read the seccomp profile {tmp_path}/missing.seccomp; check that it exists and is readable" in result.stderr


FORKS = r"""
import json, os, time
children = []
failure = None
for _ in range(60):
    try:
        pid = os.fork()
    except OSError as error:
        failure = error.errno
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({"forked": len(children), "errno": failure}))
"""


def test_processes_limit_pids_cgroup(tmp_path):
    policy = 'run:\n  sandbox:\n    rlimits: {processes: 16}\n' + POLICY
    result = run_mg(tmp_path, policy, FORKS, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    EAGAIN = 11
    assert seen["errno"] == EAGAIN
    # The init and the agent take two of the sixteen.
    assert seen["forked"] == 14
    leftovers = [line for line in open("/proc/self/mountinfo").read().splitlines() if " - cgroup " in line and "pids" in line.rsplit(" ", 1)[-1]]
    mount = leftovers[0].split(" ")[4] if leftovers else None
    if mount is not None and os.path.isdir(f"{mount}/mg-run"):
        assert [name for name in os.listdir(f"{mount}/mg-run") if not name.startswith(("cgroup.", "notify_on_release", "pids.", "tasks"))] == []


def test_check_sandbox_files(tmp_path):
    profile = tmp_path / "bad.seccomp"
    profile.write_text("default errno ENOSYS\nallow read\nbogus here\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'run:\n  sandbox:\n    profile: "{profile}"\n    writable: ["{tmp_path}/missing"]\n' + POLICY)
    completed = subprocess.run([MG_RUN, "check", str(policy)], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 1
    assert completed.stdout == ""
    errors = completed.stderr.splitlines()
    assert errors[0] == f"{policy}: run.sandbox.profile: invalid seccomp profile {profile}: line 3: unknown rule 'bogus'; a line starts with default, allow, errno or notify"
    assert errors[1] == f"{policy}: run.sandbox.writable: '{tmp_path}/missing' not found; create it or remove it from the list"


ENVIRONMENT = r"""
import json, os
names = ["GITHUB_TOKEN", "MY_SERVICE_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "DB_PASSWORD", "PLAIN_SETTING",
         "OPENAI_API_KEY", "MG_RUN_TOKEN"]
print(json.dumps({name: os.environ.get(name) for name in names}))
"""


def test_environment_credentials_removed(tmp_path):
    secrets = {"GITHUB_TOKEN": "ghp-test-value", "MY_SERVICE_API_KEY": "svc-test-value", "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
               "AWS_ACCESS_KEY_ID": "AKIATESTVALUE", "DB_PASSWORD": "db-test-value", "PLAIN_SETTING": "plain"}
    result = run_mg(tmp_path, POLICY, ENVIRONMENT, "--upstream", "simulate", "--pass-env", "MY_SERVICE_API_KEY", env=secrets)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["MY_SERVICE_API_KEY"] == "svc-test-value", "passed on by --pass-env"
    assert seen["PLAIN_SETTING"] == "plain"
    for name in ["GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "DB_PASSWORD"]:
        assert seen[name] is None, name
    assert seen["OPENAI_API_KEY"] == seen["MG_RUN_TOKEN"]
    assert seen["MG_RUN_TOKEN"].startswith("mgr-")
    assert "names=AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY,DB_PASSWORD,GITHUB_TOKEN" in result.stderr
    for value in ["ghp-test-value", "aws-secret-value", "db-test-value"]:
        assert value not in result.stderr
