"""The agent's seccomp filter, checked from inside the sandbox with raw system calls (x86_64 numbers)."""

import json
import platform

import pytest

from conftest import run_mg

PROBE = r"""
import ctypes, json, socket, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(number, *args):
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return [result, ctypes.get_errno()]
seen = {
    "x32_socket": call(0x40000000 | 41, 2, 1, 0),
    "io_uring_setup": call(425, 1, 0),
    "ptrace": call(101, 0, 0, 0, 0),
    "unshare": call(272, 0x00020000),
    "clone3": call(435, 0, 0),
    "prctl_set_seccomp": call(157, 22, 2, 0),
    "mount": call(165, 0, 0, 0, 0, 0),
    # clone(CLONE_NEWUSER | SIGCHLD) and clone(CLONE_NEWNET | SIGCHLD): the child, if any, exits at once.
    "clone_newuser": call(56, 0x10000000 | 17, 0, 0, 0, 0),
    "clone_newnet": call(56, 0x40000000 | 17, 0, 0, 0, 0),
    "sethostname": call(170, 0, 0),
    # Not in the agent profile's allow list, so they look unimplemented; the host kernel has both.
    "remap_file_pages": call(216, 0, 0, 0, 0, 0),
    "process_madvise": call(440, -1, 0, 0, 0, 0),
}
results = []
thread = threading.Thread(target=lambda: results.append("ran"))
thread.start()
thread.join()
seen["thread"] = results
seen["getaddrinfo"] = len(socket.getaddrinfo("localhost", 80)) > 0
print(json.dumps(seen))
"""

EPERM, ENOSYS = 1, 38


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the probe uses x86_64 system call numbers")
def test_filter_denies_escapes_and_keeps_python_working(tmp_path):
    result = run_mg(tmp_path, 'rules:\n  - action: "llm:*"\n', PROBE, "--upstream", "simulate")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["x32_socket"] == [-1, ENOSYS]
    assert seen["io_uring_setup"] == [-1, EPERM]
    assert seen["ptrace"] == [-1, EPERM]
    assert seen["unshare"] == [-1, EPERM]
    assert seen["clone3"] == [-1, ENOSYS]
    assert seen["prctl_set_seccomp"] == [-1, EPERM]
    assert seen["mount"] == [-1, EPERM]
    assert seen["clone_newuser"] == [-1, EPERM]
    assert seen["clone_newnet"] == [-1, EPERM]
    assert seen["sethostname"] == [-1, EPERM]
    assert seen["remap_file_pages"] == [-1, ENOSYS]
    assert seen["process_madvise"] == [-1, ENOSYS]
    assert seen["thread"] == ["ran"]
    assert seen["getaddrinfo"] is True
