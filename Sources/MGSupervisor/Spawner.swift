import CShim
import Foundation

public struct SpawnError: Error, CustomStringConvertible {
    public var description: String
    /// The exit status mg-run returns for it: 127 not found, 126 not executable, 70 otherwise.
    public var exitStatus: Int32
}

/// A program running as the only child of a fresh PID namespace's init.
struct SpawnedTree {
    /// The namespace's init; SIGKILL to it kills every process in the tree.
    var initPID: pid_t
    var statusFD: Int32
    /// The proxy's listening socket inside the tree's network namespace, or -1.
    var listenFD: Int32
    /// The egress proxy's listening socket there, or -1.
    var egressFD: Int32
    /// The seccomp listener for the profile's notify rules (code:execute), or -1.
    var listenerFD: Int32 = -1
    /// With a listener: the program's process, in mg-run's PID namespace.
    var programPID: pid_t = 0
}

/// The confinement of the tree, which `Spawner.spawn` sets up in full or fails, never falling back to less.
struct Sandbox {
    enum Isolation {
        /// New PID, mount, IPC, UTS (and network) namespaces, with the read-only paths and the seccomp filter.
        case namespaces
        /// The caller's namespaces: a sub-agent inside its parent's sandbox, which already confines it.
        case parentSandbox
        /// No sandbox, because the user asked for none (--no-sandbox, run.sandbox.profile: none).
        case none
    }

    var isolation = Isolation.namespaces
    var network = NetworkMode.host
    /// With proxy_only, the port the proxy listens on inside the namespace; the egress proxy takes the next one.
    var listenPort: UInt16 = 0
    var seccomp: [UInt8]?
    /// Whether the filter has notify rules, whose listener comes back in `SpawnedTree.listenerFD`.
    var seccompListener = false
    var cgroupProcsFD: Int32 = -1
    /// The pids controller's cgroup.procs on a version 1 hierarchy (run.sandbox.rlimits.processes), or -1.
    var pidsProcsFD: Int32 = -1
    var limits: [(resource: Int32, value: UInt64)] = []
    var readOnly: [String] = []
    /// Whether every mount is read-only but `writable` and `scratch`.
    var readOnlyRoot = false
    /// Host paths that stay writable under a read-only root (`run.sandbox.writable`).
    var writable: [String] = []
    /// Paths that get a fresh, private tmpfs under a read-only root, such as /tmp.
    var scratch: [String] = []
    var scratchBytes: UInt64 = 256 << 20
}

/// Network reach of the agent, from `run.sandbox.network`.
public enum NetworkMode: String, Sendable, CaseIterable {
    /// A network namespace with loopback only, where the proxy listens: the agent reaches nothing else.
    case proxyOnly = "proxy_only"
    /// A network namespace with loopback only and no proxy.
    case none
    /// The host's network: the agent can go around the proxy.
    case host
}

enum Spawner {
    /// Finds `name` on `PATH` the way a shell does; a name with a slash is taken as a path.
    static func resolve(_ name: String, path: String?) throws(SpawnError) -> String {
        if name.contains("/") {
            guard FileManager.default.fileExists(atPath: name) else {
                throw SpawnError(description: "command not found: \(name)", exitStatus: 127)
            }
            guard access(name, X_OK) == 0 else {
                throw SpawnError(description: "command is not executable: \(name); check its permissions", exitStatus: 126)
            }
            return name
        }
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        throw SpawnError(description: "command not found: \(name) (searched PATH); give a path or install it", exitStatus: 127)
    }

    /// Starts the tree. Must run on a thread that lives as long as the run,
    /// because the init is killed when the thread that cloned it exits (PR_SET_PDEATHSIG).
    /// With a network other than host, the tree gets a network namespace. With `listenPort`, the proxy's
    /// socket is also opened inside it, on 127.0.0.1, before the program starts.
    static func spawn(path: String, arguments: [String], environment: [String: String], sandbox: Sandbox) throws(SpawnError) -> SpawnedTree {
        let argv = CStringArray(arguments)
        let readOnlyPaths = CStringArray(sandbox.readOnly)
        let writablePaths = CStringArray(sandbox.writable)
        let scratchPaths = CStringArray(sandbox.scratch)
        defer {
            readOnlyPaths.free()
            writablePaths.free()
            scratchPaths.free()
        }
        let envp = CStringArray(environment.map { "\($0.key)=\($0.value)" }.sorted())
        defer {
            argv.free()
            envp.free()
        }

        var result = mg_spawn_result()
        let program = sandbox.seccomp ?? []
        let resources = sandbox.limits.map(\.resource)
        let values = sandbox.limits.map { CUnsignedLongLong($0.value) }
        let namespaces = sandbox.isolation == .namespaces
        let network = namespaces ? sandbox.network : .host
        let error: Int32 = path.withCString { pathPointer in
            program.withUnsafeBytes { filter in resources.withUnsafeBufferPointer { resourcePointer in values.withUnsafeBufferPointer { valuePointer in
                var config = mg_spawn_config(path: pathPointer, argv: argv.pointer, envp: envp.pointer, directory: nil,
                                             new_user_namespace: namespaces && !hasSystemAdministration() ? 1 : 0,
                                             new_network_namespace: network == .host ? 0 : 1,
                                             listen_port: network == .proxyOnly ? sandbox.listenPort : 0,
                                             egress_port: network == .proxyOnly ? sandbox.listenPort + 1 : 0,
                                             cgroup_procs_fd: sandbox.cgroupProcsFD, pids_procs_fd: sandbox.pidsProcsFD,
                                             read_only: sandbox.readOnly.isEmpty || !namespaces ? nil : readOnlyPaths.pointer,
                                             rlimit_resources: resourcePointer.baseAddress, rlimit_values: valuePointer.baseAddress,
                                             rlimit_count: Int32(sandbox.limits.count),
                                             seccomp_program: sandbox.seccomp == nil ? nil : filter.baseAddress,
                                             seccomp_program_bytes: UInt32(filter.count),
                                             seccomp_listener: sandbox.seccomp != nil && sandbox.seccompListener ? 1 : 0,
                                             without_namespaces: namespaces ? 0 : 1,
                                             read_only_root: namespaces && sandbox.readOnlyRoot ? 1 : 0,
                                             writable: writablePaths.pointer, scratch: scratchPaths.pointer,
                                             scratch_bytes: CUnsignedLongLong(sandbox.scratchBytes))
                return mg_spawn(&config, &result)
            } } }
        }
        if error != 0 {
            throw SpawnError(description: "cannot set up the sandbox: clone with new PID, mount, IPC and UTS namespaces failed: \(String(cString: strerror(error))); run mg-run as root or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1), or pass --no-sandbox to run the agent without a sandbox", exitStatus: 70)
        }

        // The program sends its seccomp listener just before its exec, which then waits for mg-run's decision.
        var listener: Int32 = -1
        var programPID: pid_t = 0
        if result.notify_fd >= 0 {
            listener = mg_receive_descriptor(result.notify_fd)
            close(result.notify_fd)
            // Only the program is under the filter yet, so the first notification is its own exec, which mg-run started.
            var first = mg_notification()
            if listener >= 0, mg_notify_receive(listener, 10_000, &first) == 1 {
                programPID = first.pid
                _ = mg_notify_respond(listener, first.id, 0)
            }
        }

        // EOF means exec succeeded. Otherwise 8 bytes carry the failed stage and its errno.
        var report: (Int32, Int32) = (0, 0)
        let got = withUnsafeMutableBytes(of: &report) { buffer in readFully(result.error_fd, buffer) }
        close(result.error_fd)
        if got == 8 {
            if listener >= 0 { close(listener) }
            var status: Int32 = 0
            waitpid(result.init_pid, &status, 0)
            close(result.status_fd)
            let reason = String(cString: strerror(report.1))
            switch report.0 {
            case Int32(MG_SPAWN_STAGE_EXEC):
                let code: Int32 = report.1 == ENOENT ? 127 : 126
                throw SpawnError(description: "cannot execute \(path): \(reason)", exitStatus: code)
            case Int32(MG_SPAWN_STAGE_RLIMITS):
                throw SpawnError(description: "cannot set run.sandbox.rlimits before running \(path): \(reason)", exitStatus: 70)
            case Int32(MG_SPAWN_STAGE_SECCOMP):
                throw SpawnError(description: "cannot install the seccomp filter before running \(path): \(reason)", exitStatus: 70)
            case Int32(MG_SPAWN_STAGE_READ_ONLY):
                throw SpawnError(description: "cannot set up the sandbox: mounting a private /run and read-only /proc/sys, /sys and system directories failed: \(reason)", exitStatus: 70)
            case Int32(MG_SPAWN_STAGE_SCRATCH):
                throw SpawnError(description: "cannot set up the sandbox: making the file system read-only, with \((sandbox.writable + sandbox.scratch).joined(separator: ", ")) writable, failed: \(reason); check that every run.sandbox.writable path exists (a read-only root needs Linux 5.12 or later)", exitStatus: 70)
            case Int32(MG_SPAWN_STAGE_CAPABILITIES):
                throw SpawnError(description: "cannot drop capabilities before running \(path): \(reason); mg-run needs CAP_SETPCAP (root) for its sandbox", exitStatus: 70)
            case Int32(MG_SPAWN_STAGE_PROC):
                throw SpawnError(description: "cannot mount a private /proc for the process tree: \(reason); mg-run needs root or unprivileged user namespaces", exitStatus: 70)
            default:
                throw SpawnError(description: "cannot start \(path): setup stage \(report.0) failed: \(reason)", exitStatus: 70)
            }
        }

        return SpawnedTree(initPID: result.init_pid, statusFD: result.status_fd, listenFD: result.listen_fd, egressFD: result.egress_fd,
                           listenerFD: listener, programPID: programPID)
    }

    /// Reads until the buffer is full or EOF; returns the byte count.
    static func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
        var offset = 0
        while offset < buffer.count {
            let got = read(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            offset += got
        }
        return offset
    }
}

/// A NULL-terminated array of C strings, for argv and envp.
struct CStringArray {
    let pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>

    init(_ strings: [String]) {
        pointer = .allocate(capacity: strings.count + 1)
        for (index, string) in strings.enumerated() {
            pointer[index] = strdup(string)
        }
        pointer[strings.count] = nil
    }

    func free() {
        var index = 0
        while let string = pointer[index] {
            Foundation.free(string)
            index += 1
        }
        pointer.deallocate()
    }

}

/// Returns whether this process has CAP_SYS_ADMIN, which new namespaces need without a user namespace.
/// A sub-agent's mg-run runs as root but without it, because its parent dropped it.
func hasSystemAdministration() -> Bool {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
          let mask = UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16)
    else { return geteuid() == 0 }
    return mask >> 21 & 1 == 1
}
