import Foundation
import MGGovernor

/// One line of the audit log: a call or a decision.
public struct AuditRecord: Sendable {
    public var action: String
    public var model: String?
    /// "allow", "deny", "conclude", or "fallback" for a call moved to another model before its decision.
    public var decision: String
    public var reason: String
    public var inputTokens = 0
    public var outputTokens = 0
    public var costUSD = "0"
    public var latencyMilliseconds = 0
    /// The HTTP status the client got.
    public var status = 0
    /// True when the provider reported no usage and the cost is mg-run's bound.
    public var estimated = false
    /// With `audit: detailed`: the bodies, redacted and truncated.
    public var requestBody: String?
    public var responseBody: String?

    public init(action: String, model: String?, decision: String, reason: String) {
        self.action = action
        self.model = model
        self.decision = decision
        self.reason = reason
    }
}

/// Appends JSON Lines to a file, one `write` per record, so each line is on disk
/// (in the page cache) when `append` returns and a crash loses no finished line.
public final class AuditLog: Sendable {
    private let fd: Int32
    private let runID: String
    private let taskID: String
    private let lock = Locked(())

    public init(path: String, runID: String, taskID: String) throws(HTTPServerError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw HTTPServerError(description: "cannot open the audit log '\(path)': \(String(cString: strerror(errno))); check that its directory exists and is writable")
        }
        self.fd = fd
        self.runID = runID
        self.taskID = taskID
    }

    deinit { close(fd) }

    public func append(_ record: AuditRecord) {
        var fields: [(String, String)] = [
            ("ts", quoted(timestamp())),
            ("run_id", quoted(runID)),
            ("task_id", quoted(taskID)),
            ("action", quoted(record.action)),
            ("model", record.model.map(quoted) ?? "null"),
            ("decision", quoted(record.decision)),
            ("reason", quoted(record.reason)),
            ("input_tokens", String(record.inputTokens)),
            ("output_tokens", String(record.outputTokens)),
            ("cost_usd", record.costUSD),
            ("latency_ms", String(record.latencyMilliseconds)),
            ("status", String(record.status)),
        ]
        if record.estimated { fields.append(("estimated", "true")) }
        if let body = record.requestBody { fields.append(("request_body", quoted(body))) }
        if let body = record.responseBody { fields.append(("response_body", quoted(body))) }
        var line = "{"
        line.reserveCapacity(320)
        for (index, field) in fields.enumerated() {
            line += index == 0 ? "\"" : ",\""
            line += field.0
            line += "\":"
            line += field.1
        }
        line += "}\n"
        var bytes = Array(line.utf8)
        lock.withLock { _ in
            bytes.withUnsafeMutableBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                    if written < 0 && errno == EINTR { continue }
                    if written <= 0 { return }
                    offset += written
                }
            }
        }
    }

    private func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        // Formatted by hand: String(format:) showed up in profiles of the per-call path.
        var text = ""
        text.reserveCapacity(24)
        func append(_ value: Int, digits: Int) {
            let decimal = String(value)
            text += String(repeating: "0", count: max(0, digits - decimal.count)) + decimal
        }
        append(Int(parts.tm_year) + 1900, digits: 4)
        text += "-"
        append(Int(parts.tm_mon) + 1, digits: 2)
        text += "-"
        append(Int(parts.tm_mday), digits: 2)
        text += "T"
        append(Int(parts.tm_hour), digits: 2)
        text += ":"
        append(Int(parts.tm_min), digits: 2)
        text += ":"
        append(Int(parts.tm_sec), digits: 2)
        text += "."
        append(now.tv_nsec / 1_000_000, digits: 3)
        return text + "Z"
    }
}

/// Encodes `text` as a JSON string literal.
func quoted(_ text: String) -> String {
    // Most values need no escaping; appending scalar by scalar showed up in profiles of the per-call path.
    if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
        return "\"" + text + "\""
    }
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 {
                result += String(format: "\\u%04x", scalar.value)
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + "\""
}
