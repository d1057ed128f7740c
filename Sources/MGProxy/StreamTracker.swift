import Foundation
import MGGovernor

/// Splits a server-sent-event stream into events as bytes arrive, reads usage
/// out of the events that carry it, and picks the events that go on to the client.
/// Events are forwarded byte for byte; only OpenAI's usage-only chunk is
/// dropped when mg-run, not the client, asked for it.
struct StreamTracker {
    let endpoint: Endpoint
    let dropsUsageChunk: Bool
    private var pending: [UInt8] = []
    private(set) var usage: Usage?
    /// Anthropic sends input usage in `message_start` and cumulative output in each `message_delta`.
    private var anthropicFields: [String: Int] = [:]
    /// Text of content deltas seen, for an estimate when the stream ends without usage.
    private(set) var outputBytes = 0
    /// Whether the stream's terminal event has been seen: `[DONE]`, `message_stop`, or a terminal `response.*` event.
    private(set) var finished = false

    init(endpoint: Endpoint, dropsUsageChunk: Bool) {
        self.endpoint = endpoint
        self.dropsUsageChunk = dropsUsageChunk
    }

    /// Takes the next bytes from upstream and returns the bytes to send to the client now.
    mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        pending += bytes
        var output: [UInt8] = []
        var start = 0
        var index = 0
        while index + 1 < pending.count {
            // An event ends at a blank line: "\n\n", or "\r\n\r\n" from some servers.
            var end = -1
            if pending[index] == 0x0A && pending[index + 1] == 0x0A {
                end = index + 2
            } else if index + 3 < pending.count && pending[index] == 0x0D && pending[index + 1] == 0x0A
                        && pending[index + 2] == 0x0D && pending[index + 3] == 0x0A {
                end = index + 4
            }
            if end < 0 {
                index += 1
                continue
            }
            let event = Array(pending[start..<end])
            if inspect(event) { output += event }
            start = end
            index = end
        }
        pending.removeFirst(start)
        return output
    }

    /// Returns what is left of an unterminated last event, forwarded as it is.
    mutating func flush() -> [UInt8] {
        defer { pending = [] }
        return pending
    }

    /// Reads usage out of one event; returns false for an event the client must not see.
    private mutating func inspect(_ event: [UInt8]) -> Bool {
        let text = String(decoding: event, as: UTF8.self)
        var eventName = ""
        var data = ""
        for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            if line.hasPrefix("event:") {
                eventName = line.dropFirst(6).trimmingCharacters(in: .whitespaces)
            } else if line.hasPrefix("data:") {
                let value = line.dropFirst(5)
                data += value.hasPrefix(" ") ? String(value.dropFirst()) : String(value)
            }
        }
        if data == "[DONE]" || eventName == "message_stop" || ["response.completed", "response.incomplete", "response.failed"].contains(eventName)
            || data.contains("\"type\":\"response.completed\"")
            || data.contains("\"type\":\"response.incomplete\"") || data.contains("\"type\":\"response.failed\"") {
            finished = true
        }
        switch endpoint.provider {
        case .openai:
            outputBytes += countContentBytes(data)
            // Parse only chunks that carry a usage object; every other chunk has "usage":null or none.
            guard data.contains("\"usage\":{") || data.contains("\"usage\": {"),
                  let json = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any]
            else { return true }
            if endpoint == .responses {
                // The terminal response.completed (or .incomplete, .failed) event carries the whole response.
                if let usageObject = (json["response"] as? [String: Any])?["usage"] as? [String: Any] {
                    usage = UsageParser.responses(UsageParser.counts(of: usageObject))
                }
                return true
            }
            guard let usageObject = json["usage"] as? [String: Any] else { return true }
            usage = UsageParser.openAI(UsageParser.counts(of: usageObject))
            let choices = json["choices"] as? [Any] ?? []
            return !(dropsUsageChunk && choices.isEmpty)
        case .anthropic:
            if eventName == "content_block_delta" { outputBytes += countContentBytes(data) }
            guard eventName == "message_start" || eventName == "message_delta",
                  let json = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any]
            else { return true }
            let usageObject = eventName == "message_start"
                ? (json["message"] as? [String: Any])?["usage"] as? [String: Any]
                : json["usage"] as? [String: Any]
            // Cumulative: the last value wins.
            for (key, count) in UsageParser.counts(of: usageObject ?? [:]) {
                anthropicFields[key] = count
            }
            usage = UsageParser.anthropic(anthropicFields)
            return true
        }
    }

    /// Approximates the generated text in a chunk by a quarter of its length, for estimates only.
    private func countContentBytes(_ data: String) -> Int {
        data.contains("\"content\"") || data.contains("\"text\"") || data.contains("\"partial_json\"") ? data.utf8.count / 4 : 0
    }
}
