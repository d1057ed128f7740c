import CSeccomp
import Foundation

/// The seccomp filter the agent runs under, compiled here in mg-run and installed by the tree's
/// init last, just before exec.
///
/// This is a deny list over a default of allow. The system calls that reach past the namespaces
/// (ptrace, mount, unshare, setns, clone with namespace flags, bpf, kexec, keyrings, module loading,
/// io_uring) fail with EPERM.
/// `seccomp` and `prctl(PR_SET_SECCOMP)` fail, so no later filter can loosen this one. `clone3`
/// fails with ENOSYS, so that glibc falls back to `clone`. System calls of another architecture
/// (i386 through int 0x80) and of the x32 ABI fail with ENOSYS.
/// NOTE: the agent profile should become a deny-by-default allow list, with a tighter strict profile.
enum SeccompProfile {
    static let denied = [
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
        "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
        "bpf", "perf_event_open", "userfaultfd",
        "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl",
        "keyctl", "add_key", "request_key",
        "init_module", "finit_module", "delete_module",
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "syslog",
        "seccomp",
    ]

    /// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID and NEWNET.
    static let namespaceFlags: [UInt64] = [0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000]

    /// Returns the BPF program of the agent profile.
    static func agentProgram() throws(SpawnError) -> [UInt8] {
        guard let context = seccomp_init(0x7fff_0000) else {  // SCMP_ACT_ALLOW
            throw SpawnError(description: "cannot build the seccomp filter: seccomp_init failed", exitStatus: 70)
        }
        defer { seccomp_release(context) }
        let enosys = mg_seccomp_errno(ENOSYS)
        var failed: String?
        if seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, enosys) != 0 { failed = "the action for foreign architectures" }
        for name in denied where failed == nil {
            if mg_seccomp_rule(context, name, mg_seccomp_errno(EPERM)) != 0 { failed = name }
        }
        if failed == nil, mg_seccomp_rule(context, "clone3", enosys) != 0 { failed = "clone3" }
        if failed == nil, mg_seccomp_rule_first_argument(context, "prctl", mg_seccomp_errno(EPERM), UInt64(PR_SET_SECCOMP)) != 0 {
            failed = "prctl(PR_SET_SECCOMP)"
        }
        // clone with a namespace flag does what unshare does; a sub-agent's mg-run then runs without namespaces.
        for flag in SeccompProfile.namespaceFlags where failed == nil {
            if mg_seccomp_rule_first_argument_has_bit(context, "clone", mg_seccomp_errno(EPERM), flag) != 0 { failed = "clone with namespace flags" }
        }
        if let failed {
            throw SpawnError(description: "cannot build the seccomp filter: libseccomp rejected the rule for \(failed)", exitStatus: 70)
        }
        let fd = mg_seccomp_export(context)
        guard fd >= 0 else {
            throw SpawnError(description: "cannot export the seccomp filter: \(String(cString: strerror(-fd)))", exitStatus: 70)
        }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        var program = [UInt8](repeating: 0, count: Int(max(0, size)))
        let read = program.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard size > 0, read == size else {
            throw SpawnError(description: "cannot read the exported seccomp filter back", exitStatus: 70)
        }
        return program
    }
}
