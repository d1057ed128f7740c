import Foundation
import MGLog

/// The private Unix socket through which `mg-run status|pause|resume|stop` reach a running mg-run.
///
/// One socket per run, named after the run id, in a directory only its owner can enter: `/run/mg-run`
/// for root, else `$XDG_RUNTIME_DIR/mg-run`. The agent's `/run` is an empty tmpfs, so it cannot reach
/// its own supervisor. A client sends one command line and reads one JSON line back.
final class ControlSocket: @unchecked Sendable {
    // `fd` is only accepted on by the server thread and closed by `close()`.
    let path: String
    private let fd: Int32

    /// The directory of the control sockets of this user's runs.
    static var directory: String {
        if geteuid() == 0 { return "/run/mg-run" }
        let base = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"] ?? (NSHomeDirectory() + "/.local/state")
        return base + "/mg-run"
    }

    /// Listens on `<directory>/<runID>.sock` and replies to each command with `handle`, on a thread of its own.
    init(runID: String, logger: Logger, handle: @escaping @Sendable (String) -> [String: Any]) throws(RunError) {
        let directory = ControlSocket.directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw RunError("cannot create the control socket directory \(directory): \(error.localizedDescription)", exitStatus: ExitStatus.internalError)
        }
        // Sockets of runs whose mg-run was killed refuse connections; they are removed here.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasSuffix(".sock") {
            let stale = "\(directory)/\(name)"
            if ControlSocket.send("status", to: stale) == nil { unlink(stale) }
        }
        path = "\(directory)/\(runID).sock"
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0, ControlSocket.withAddress(path, { bind(fd, $0, $1) }) == 0, chmod(path, 0o600) == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            if fd >= 0 { Glibc.close(fd) }
            throw RunError("cannot listen on the control socket \(path): \(reason)", exitStatus: ExitStatus.internalError)
        }
        let listener = fd
        let thread = Thread {
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return
                }
                var buffer = [UInt8](repeating: 0, count: 256)
                let count = read(client, &buffer, buffer.count)
                let command = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
                let reply = handle(command)
                var data = (try? JSONSerialization.data(withJSONObject: reply, options: [.sortedKeys])) ?? Data("{}".utf8)
                data.append(0x0A)
                _ = data.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
                Glibc.close(client)
                logger.debug("control command", [("command", command)])
            }
        }
        thread.name = "mg-run control socket"
        thread.start()
    }

    func close() {
        unlink(path)
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Sends one command to a control socket and returns the decoded reply, or nil when no run replies.
    static func send(_ command: String, to path: String) -> [String: Any]? {
        let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard client >= 0 else { return nil }
        defer { Glibc.close(client) }
        guard withAddress(path, { connect(client, $0, $1) }) == 0 else { return nil }
        let line = command + "\n"
        _ = write(client, line, line.utf8.count)
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(client, &buffer, buffer.count)
            if count <= 0 { break }
            data += buffer[0..<count]
        }
        return (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any]
    }

    private static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            errno = ENAMETOOLONG
            return -1
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}

/// `mg-run status` and `mg-run pause|resume|stop ID`.
enum ControlCommand {
    static func run(_ command: String, _ arguments: [String]) -> Int32 {
        let sockets = ((try? FileManager.default.contentsOfDirectory(atPath: ControlSocket.directory)) ?? [])
            .filter { $0.hasSuffix(".sock") }.sorted().map { "\(ControlSocket.directory)/\($0)" }
        let runs = sockets.compactMap { path in ControlSocket.send("status", to: path).map { (path, $0) } }

        if command == "status" {
            guard arguments.isEmpty else { return usage("mg-run status takes no arguments") }
            let rows = [["RUN", "TASK", "AGENT", "STATE", "CALLS", "COST_USD", "PID"]] + runs.map { _, status in
                ["run_id", "task_id", "agent_id", "state", "calls", "cost_usd", "pid"].map { "\(status[$0] ?? "-")" }
            }
            let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
                    .trimmingCharacters(in: .whitespaces))
            }
            return 0
        }

        guard arguments.count == 1 else { return usage("usage: mg-run \(command) RUN_ID|TASK_ID") }
        let requested = arguments[0]
        let matches = runs.filter { $0.1["run_id"] as? String == requested || $0.1["task_id"] as? String == requested }
        guard let (path, _) = matches.first else {
            FileHandle.standardError.write(Data("mg-run: error: no running mg-run has run id or task id '\(requested)'; see mg-run status\n".utf8))
            return 1
        }
        guard matches.count == 1 else {
            FileHandle.standardError.write(Data("mg-run: error: \(matches.count) runs have task id '\(requested)'; give a run id from mg-run status\n".utf8))
            return 1
        }

        guard let reply = ControlSocket.send(command, to: path) else {
            FileHandle.standardError.write(Data("mg-run: error: the run at \(path) did not reply to \(command); see mg-run status\n".utf8))
            return 1
        }
        if let error = reply["error"] as? String {
            FileHandle.standardError.write(Data("mg-run: error: \(error)\n".utf8))
            return 1
        }
        print("\(reply["run_id"] ?? requested): \(reply["state"] ?? "ok")")
        return 0
    }

    private static func usage(_ message: String) -> Int32 {
        FileHandle.standardError.write(Data("mg-run: error: \(message)\n".utf8))
        return ExitStatus.usage
    }
}
