import CShim
import Foundation
import MGLedger
import MGPolicy
import Synchronization

/// One program the agent requested to execute, as mg-run read it from the process's memory.
struct CodeExecution: Sendable {
    /// The path as the process passed it to execve, or resolved from its descriptor for fexecve.
    var path: String
    /// The interpreter that will run: the program itself, or a script's `#!` interpreter.
    var interpreter: String
    var language: String
    /// The calling process, in mg-run's PID namespace.
    var pid: pid_t
}

/// Decides the tree's execve and execveat calls, which its seccomp filter hands to mg-run as user
/// notifications. An interpreter named in `run.code_execute.interpreters` is a `code:execute` action that
/// the policy allows or denies (EACCES) before it runs. Every other program runs without a decision.
///
/// One code execution is one action: whatever an admitted interpreter process and its descendants execute
/// afterwards (a pyenv shim's helpers and the real python, a script's subprocesses) is part of it. The
/// program mg-run started is the agent itself, so its own execs are never counted, and it is never an
/// admitted execution: what its children run is counted. Neither is a sub-agent's mg-run starting its
/// program counted, because the parent allowed that as delegate:spawn.
///
/// It detects each exec of an interpreter by name, through a symbolic link, or through `#!` lines. It
/// misses code run inside an interpreter that is already running (eval, a REPL fed on stdin, a loaded
/// module) and an interpreter under another name (a renamed copy, a memory file, the dynamic loader).
/// A hostile agent could also rewrite the path in its memory between the check and the exec (from
/// another thread), so this is a meter of code execution, and the sandbox is the boundary.
final class CodeExecuteMonitor: Sendable {
    private let listener: Int32
    private let settings: CodeExecuteSettings
    private let decide: @Sendable (CodeExecution) -> Int32
    private let running = Mutex(true)
    private let programPID: pid_t
    /// Only the serving thread touches it.
    private struct State {
        /// Processes of admitted code executions, by pid, with their start time against pid reuse.
        var admitted: [pid_t: UInt64] = [:]
        /// The last refusal of each process: its start time and the interpreter. execvp tries the next PATH
        /// directory after EACCES, and that try is the same request, refused again without a new decision.
        var refused: [pid_t: (started: UInt64, interpreter: String)] = [:]
    }
    private let state: Mutex<State>

    /// `decide` returns 0 to let the program run, or the errno its exec fails with. `programPID` is the
    /// process mg-run started, the agent itself.
    init(listener: Int32, settings: CodeExecuteSettings, programPID: pid_t,
         decide: @escaping @Sendable (CodeExecution) -> Int32) {
        self.listener = listener
        self.settings = settings
        self.decide = decide
        self.programPID = programPID
        self.state = Mutex(State())
    }

    func start() {
        let thread = Thread { [self] in serve() }
        thread.name = "mg-run code:execute"
        thread.start()
    }

    /// Stops the serving thread. Execs still waiting then fail with ENOSYS when the listener closes.
    func stop() {
        running.withLock { $0 = false }
    }

    /// mg-run's own executable, which a sub-agent's mg-run runs too.
    static let ownBinary = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")

    /// AT_EMPTY_PATH: execveat of the descriptor itself (fexecve).
    static let emptyPathFlag: UInt64 = 0x1000

    private func serve() {
        defer { close(listener) }
        while running.withLock({ $0 }) {
            var notification = mg_notification()
            let got = mg_notify_receive(listener, 250, &notification)
            if got < 0 { return }  // every process under the filter has exited
            if got == 0 { continue }
            answer(notification)
        }
    }

    private func answer(_ notification: mg_notification) {
        let pid = notification.pid
        var directoryFD = Int32(AT_FDCWD)
        var pathAddress = notification.arguments.0
        var flags: UInt64 = 0
        if notification.system_call == mg_system_call_execveat() {
            directoryFD = Int32(truncatingIfNeeded: notification.arguments.0)
            pathAddress = notification.arguments.1
            flags = notification.arguments.4
        }
        let requestedPath = CodeExecuteMonitor.readString(pid: pid, address: pathAddress) ?? ""
        // What the kernel will run, as seen from mg-run: through the process's own root, cwd and descriptors.
        let hostPath: String
        var shownPath = requestedPath
        if requestedPath.isEmpty && flags & CodeExecuteMonitor.emptyPathFlag != 0 {
            hostPath = "/proc/\(pid)/fd/\(directoryFD)"
            shownPath = (try? FileManager.default.destinationOfSymbolicLink(atPath: hostPath)) ?? requestedPath
        } else if requestedPath.hasPrefix("/") {
            hostPath = CodeExecuteMonitor.hostPath(of: requestedPath, pid: pid)
        } else {
            let base = directoryFD == Int32(AT_FDCWD) ? "/proc/\(pid)/cwd" : "/proc/\(pid)/fd/\(directoryFD)"
            hostPath = "\(base)/\(requestedPath)"
            if let directory = try? FileManager.default.destinationOfSymbolicLink(atPath: base) { shownPath = "\(directory)/\(requestedPath)" }
        }
        // execvp tries every PATH directory in turn, and an exec of a missing file runs nothing.
        guard access(hostPath, X_OK) == 0 else {
            _ = mg_notify_respond(listener, notification.id, 0)
            return
        }
        let interpreter = interpreter(of: shownPath, at: hostPath, root: "/proc/\(pid)/root", depth: 0)
        // The memory read above belongs to this call only if it is still waiting.
        guard mg_notify_valid(listener, notification.id) == 1 else { return }
        var error: Int32 = 0
        if let interpreter, isCounted(pid) {
            let started = CodeExecuteMonitor.startTime(of: pid)
            let repeated = state.withLock { state in
                state.refused[pid].map { $0.started == started && $0.interpreter == interpreter } ?? false
            }
            if repeated {
                error = EACCES
            } else {
                error = decide(CodeExecution(path: shownPath, interpreter: interpreter, language: CodeExecuteSettings.language(of: interpreter), pid: pid))
            }
            if let started {
                state.withLock { state in
                    if state.admitted.count + state.refused.count > 4096 {
                        state.admitted = state.admitted.filter { CodeExecuteMonitor.startTime(of: $0.key) == $0.value }
                        state.refused = state.refused.filter { CodeExecuteMonitor.startTime(of: $0.key) == $0.value.started }
                    }
                    if error == 0 {
                        state.admitted[pid] = started
                    } else {
                        state.refused[pid] = (started, interpreter)
                    }
                }
            }
        }
        _ = mg_notify_respond(listener, notification.id, error)
    }

    /// Returns whether an interpreter that process `pid` starts is a new code execution: the process is not
    /// the agent itself, not a sub-agent's mg-run starting its program, and not inside an admitted execution.
    private func isCounted(_ pid: pid_t) -> Bool {
        guard pid != programPID else { return false }
        // The parent's delegate:spawn check governs a sub-agent's start; its own code executions count like any other.
        if (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) == CodeExecuteMonitor.ownBinary { return false }
        let ancestors = CodeExecuteMonitor.ancestors(of: pid, upTo: programPID)
        let admitted = state.withLock { $0.admitted }
        let inside = ([pid] + ancestors).contains { candidate in
            guard let started = admitted[candidate] else { return false }
            return CodeExecuteMonitor.startTime(of: candidate) == started
        }
        return !inside
    }

    /// Returns the interpreter in `settings` that running `path` (found at `hostPath`) starts: by the program's
    /// name, by the name a symbolic link points to, or through a script's `#!` line, which the kernel follows
    /// up to four levels deep.
    private func interpreter(of path: String, at hostPath: String, root: String, depth: Int) -> String? {
        if let found = settings.interpreter(of: path) { return found }
        if let target = CodeExecuteMonitor.linkTarget(of: hostPath, root: root), let found = settings.interpreter(of: target) {
            return found
        }
        guard depth < 4, let script = CodeExecuteSettings.shebangInterpreter(CodeExecuteMonitor.head(of: hostPath)) else { return nil }
        // `#!/usr/bin/env python3` names a program that env looks up on PATH, and its exec comes here too.
        guard script.hasPrefix("/") else { return settings.interpreter(of: script) }
        return interpreter(of: script, at: root + script, root: root, depth: depth + 1)
    }

    /// Returns where an absolute path of process `pid` is, seen from mg-run: under its root, with
    /// `/proc/self`, `/proc/thread-self` and `/dev/fd` meaning that process, not mg-run.
    static func hostPath(of path: String, pid: pid_t) -> String {
        for (prefix, replacement) in [("/proc/self/", "/proc/\(pid)/"), ("/proc/thread-self/", "/proc/\(pid)/"), ("/dev/fd/", "/proc/\(pid)/fd/")]
        where path.hasPrefix(prefix) {
            return replacement + path.dropFirst(prefix.count)
        }
        return "/proc/\(pid)/root\(path)"
    }

    /// Follows the symbolic links of a path's last component, up to 40, inside the process's root: an
    /// absolute target is read under `root`, because realpath would resolve it against mg-run's own mounts.
    /// Returns the final target, or nil when the path is no link.
    static func linkTarget(of hostPath: String, root: String) -> String? {
        var current = hostPath
        var target: String?
        for _ in 0..<40 {
            guard let next = try? FileManager.default.destinationOfSymbolicLink(atPath: current) else { break }
            target = next
            if next.hasPrefix("/") {
                current = root + next
            } else {
                current = URL(fileURLWithPath: current).deletingLastPathComponent().appendingPathComponent(next).path
            }
        }
        return target
    }

    /// Reads field `number` (as numbered in proc(5)) of /proc/PID/stat.
    private static func statField(_ pid: pid_t, _ number: Int) -> UInt64? {
        ProcessStat.fields(of: pid).flatMap { ProcessStat.field(number, of: $0) }
    }

    static func startTime(of pid: pid_t) -> UInt64? {
        statField(pid, 22)
    }

    /// Returns the parent, grandparent and so on of `pid`, up to and including `top` (or to PID 1).
    static func ancestors(of pid: pid_t, upTo top: pid_t) -> [pid_t] {
        var chain: [pid_t] = []
        var current = pid
        while chain.count < 256, let parent = statField(current, 4).map({ pid_t($0) }), parent > 1 {
            chain.append(parent)
            if parent == top { break }
            current = parent
        }
        return chain
    }

    /// Reads a NUL-terminated string of at most 4096 bytes (PATH_MAX) from another process's memory.
    static func readString(pid: pid_t, address: UInt64) -> String? {
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var offset = address
        while bytes.count < 4096 {
            // Reads up to the end of the page, so a string that ends just before an unmapped page is still read.
            let chunk = Int(4096 - offset % 4096)
            var buffer = [UInt8](repeating: 0, count: chunk)
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, chunk, off_t(Int64(bitPattern: offset))) }
            guard got > 0 else { return nil }
            if let end = buffer[0..<got].firstIndex(of: 0) {
                bytes += buffer[0..<end]
                return String(decoding: bytes, as: UTF8.self)
            }
            bytes += buffer[0..<got]
            offset += UInt64(got)
        }
        return nil
    }

    /// Returns the first 256 bytes of a file, for its `#!` line, or none when it cannot be read.
    static func head(of path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 256) }
        return got > 0 ? Array(buffer[0..<got]) : []
    }
}
