import Foundation
import Synchronization

/// A line logger for mg-run's own diagnostics on standard error. Messages are
/// short and lowercase; ids go in fields (`run_id=... task_id=...`) so lines can
/// be grepped. Never pass a key, a token or a prompt body as a field.
public struct Logger: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case debug, info, warning, error

        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }

        /// Returns the level spelled `name` (debug, info, warning, error), or nil.
        public init?(name: String) {
            switch name {
            case "debug": self = .debug
            case "info": self = .info
            case "warning": self = .warning
            case "error": self = .error
            default: return nil
            }
        }

        var label: String {
            switch self {
            case .debug: return "debug"
            case .info: return "info"
            case .warning: return "warning"
            case .error: return "error"
            }
        }
    }

    public var minimumLevel: Level
    /// Fields added to every line, such as the run id.
    public var fields: [(String, String)]
    private let sink: @Sendable (String) -> Void

    public init(minimumLevel: Level = .info, fields: [(String, String)] = [], sink: @escaping @Sendable (String) -> Void = Logger.standardError) {
        self.minimumLevel = minimumLevel
        self.fields = fields
        self.sink = sink
    }

    /// Returns a logger that adds `extra` to every line.
    public func with(_ extra: [(String, String)]) -> Logger {
        var copy = self
        copy.fields += extra
        return copy
    }

    public func log(_ level: Level, _ message: String, _ extra: [(String, String)] = []) {
        guard level >= minimumLevel else { return }
        var line = "mg-run: \(level.label): \(message)"
        for (key, value) in fields + extra {
            let needsQuotes = value.isEmpty || value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" })
            line += needsQuotes ? " \(key)=\"\(value.replacingOccurrences(of: "\"", with: "\\\""))\"" : " \(key)=\(value)"
        }
        sink(line + "\n")
    }

    public func debug(_ message: String, _ extra: [(String, String)] = []) { log(.debug, message, extra) }
    public func info(_ message: String, _ extra: [(String, String)] = []) { log(.info, message, extra) }
    public func warning(_ message: String, _ extra: [(String, String)] = []) { log(.warning, message, extra) }
    public func error(_ message: String, _ extra: [(String, String)] = []) { log(.error, message, extra) }

    private static let writeLock = Mutex(())

    /// Writes the line to file descriptor 2 in one call, under a lock so lines of concurrent threads do not interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        writeLock.withLock { _ in
            var bytes = Array(line.utf8)
            bytes.withUnsafeMutableBytes { buffer in
                _ = Foundation.write(2, buffer.baseAddress, buffer.count)
            }
        }
    }
}
