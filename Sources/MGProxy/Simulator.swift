import Foundation
import MGGovernor

/// A built-in stand-in for the OpenAI and Anthropic APIs. It responds in each
/// provider's wire format, streamed or not, with deterministic text and usage,
/// and opens no connection of its own. The usage rule:
///
/// - input tokens: ceil(B / 4) + 3 per message + 3, where B is the UTF-8 byte
///   count of all text in the messages and the system prompt; for embeddings,
///   ceil(B / 4) per string input, or the number of token ids given;
/// - output tokens: min(200 + B % 300, the request's max_tokens or
///   max_completion_tokens); the reply is that many words, one token each.
public final class SimulatedProvider: HTTPHandler {
    /// Delay before each response starts.
    public let latencyMilliseconds: Int
    /// Delay before each streamed event after the first, so tests can cut a stream in the middle.
    public let eventDelayMilliseconds: Int
    private let requestCounts = Locked<[String: Int]>([:])

    public init(latencyMilliseconds: Int = 0, eventDelayMilliseconds: Int = 0) {
        self.latencyMilliseconds = latencyMilliseconds
        self.eventDelayMilliseconds = eventDelayMilliseconds
    }

    /// Requests received per path, for tests that count upstream attempts.
    public var counts: [String: Int] { requestCounts.withLock { $0 } }

    static let vocabulary = ["plan", "search", "source", "finding", "summary", "evidence", "topic", "result", "note", "detail",
                             "next", "more", "check", "analysis", "report", "context", "idea", "step", "review", "data"]

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        requestCounts.withLock { $0[request.path, default: 0] += 1 }
        if request.method == "GET" && request.path == "/sim/stats" {
            return .json(200, counts)
        }
        if latencyMilliseconds > 0 { usleep(useconds_t(latencyMilliseconds * 1000)) }
        let json = (try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any] ?? [:]
        switch (request.method, request.path) {
        case ("GET", "/v1/models"), ("GET", "/models"):
            return .json(200, ["object": "list", "data": SimulatedProvider.models.map { ["id": $0, "object": "model", "created": 0, "owned_by": "mg-run-simulator"] }])
        case ("POST", "/v1/chat/completions"), ("POST", "/chat/completions"):
            return chat(json)
        case ("POST", "/v1/messages"), ("POST", "/messages"):
            return messages(json)
        case ("POST", "/v1/responses"), ("POST", "/responses"):
            return responses(json)
        case ("POST", "/v1/embeddings"), ("POST", "/embeddings"):
            return embeddings(json)
        default:
            return .json(404, ["error": ["message": "the simulator has no \(request.method) \(request.path)", "type": "invalid_request_error", "param": NSNull(), "code": "unknown_url"]])
        }
    }

    static let models = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-3.5-turbo", "text-embedding-3-small", "claude-sonnet-4-5", "claude-haiku-4-5"]

    // MARK: - Usage rule

    struct Reply {
        var inputTokens: Int
        var outputTokens: Int
        var truncated: Bool
        var words: [String]
    }

    static func textBytes(of content: Any?) -> Int {
        if let text = content as? String { return text.utf8.count }
        guard let parts = content as? [Any] else { return 0 }
        var total = 0
        for case let part as [String: Any] in parts {
            if let text = part["text"] as? String { total += text.utf8.count }
            if let nested = part["content"] { total += textBytes(of: nested) }
        }
        return total
    }

    static func reply(to json: [String: Any], capField: [String]) -> Reply {
        // Chat and Messages send "messages" (and "system"); the Responses API sends "input" (and "instructions").
        var messages = json["messages"] as? [Any] ?? []
        var bytes = textBytes(of: json["system"]) + textBytes(of: json["instructions"])
        if let input = json["input"] as? String {
            messages = [["content": input]]
        } else if let items = json["input"] as? [Any] {
            messages = items
        }
        for case let message as [String: Any] in messages {
            bytes += textBytes(of: message["content"])
        }
        let inputTokens = (bytes + 3) / 4 + 3 * messages.count + 3
        let natural = 200 + bytes % 300
        let cap = capField.lazy.compactMap { json[$0] as? Int }.first ?? natural
        let outputTokens = min(natural, max(0, cap))
        var words: [String] = []
        words.reserveCapacity(outputTokens)
        for index in 0..<outputTokens {
            words.append(vocabulary[(index * 7 + bytes) % vocabulary.count])
        }
        return Reply(inputTokens: inputTokens, outputTokens: outputTokens, truncated: outputTokens < natural, words: words)
    }

    // MARK: - OpenAI

    private func chat(_ json: [String: Any]) -> HTTPResponse {
        let model = json["model"] as? String ?? "gpt-4o"
        let reply = SimulatedProvider.reply(to: json, capField: ["max_completion_tokens", "max_tokens"])
        let usage: [String: Any] = [
            "prompt_tokens": reply.inputTokens, "completion_tokens": reply.outputTokens, "total_tokens": reply.inputTokens + reply.outputTokens,
            "prompt_tokens_details": ["cached_tokens": 0], "completion_tokens_details": ["reasoning_tokens": 0],
        ]
        let id = "chatcmpl-sim\(reply.inputTokens)"
        let finish = reply.truncated ? "length" : "stop"
        guard json["stream"] as? Bool == true else {
            return .json(200, [
                "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
                "choices": [["index": 0, "message": ["role": "assistant", "content": reply.words.joined(separator: " ")], "finish_reason": finish, "logprobs": NSNull()]],
                "usage": usage,
            ])
        }
        func chunk(_ delta: [String: Any], _ finishReason: String?) -> String {
            let object: [String: Any] = ["id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                                         "choices": [["index": 0, "delta": delta, "finish_reason": finishReason ?? NSNull()] as [String: Any]], "usage": NSNull()]
            return "data: \(Conclusion.encode(object))\n\n"
        }
        var events = [chunk(["role": "assistant", "content": ""], nil)]
        for start in stride(from: 0, to: reply.words.count, by: 8) {
            let piece = reply.words[start..<min(start + 8, reply.words.count)].joined(separator: " ")
            events.append(chunk(["content": (start == 0 ? "" : " ") + piece], nil))
        }
        events.append(chunk([:], finish))
        if (json["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true {
            let object: [String: Any] = ["id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [Any](), "usage": usage]
            events.append("data: \(Conclusion.encode(object))\n\n")
        }
        events.append("data: [DONE]\n\n")
        return HTTPResponse(status: 200, headers: [("Content-Type", "text/event-stream")], body: .stream(EventList(events, delayMilliseconds: eventDelayMilliseconds)))
    }

    private func embeddings(_ json: [String: Any]) -> HTTPResponse {
        let model = json["model"] as? String ?? "text-embedding-3-small"
        var inputs: [Int] = []  // tokens per input
        switch json["input"] {
        case let text as String: inputs = [(text.utf8.count + 3) / 4]
        case let texts as [String]: inputs = texts.map { ($0.utf8.count + 3) / 4 }
        case let ids as [Int]: inputs = [ids.count]
        case let lists as [[Int]]: inputs = lists.map(\.count)
        default: inputs = [1]
        }
        let dimensions = json["dimensions"] as? Int ?? 1536
        let base64 = json["encoding_format"] as? String == "base64"
        let data: [[String: Any]] = inputs.enumerated().map { index, tokens in
            var vector = [Float](repeating: 0, count: dimensions)
            for position in 0..<dimensions { vector[position] = Float((position + tokens + index) % 17) / 17 }
            let embedding: Any = base64 ? vector.withUnsafeBytes { Data($0).base64EncodedString() } : vector.map(Double.init)
            return ["object": "embedding", "index": index, "embedding": embedding]
        }
        let total = inputs.reduce(0, +)
        return .json(200, ["object": "list", "model": model, "data": data, "usage": ["prompt_tokens": total, "total_tokens": total]])
    }

    private func responses(_ json: [String: Any]) -> HTTPResponse {
        let model = json["model"] as? String ?? "gpt-4o"
        let reply = SimulatedProvider.reply(to: json, capField: ["max_output_tokens"])
        let id = "resp_sim\(reply.inputTokens)"
        let text = reply.words.joined(separator: " ")
        let usage: [String: Any] = [
            "input_tokens": reply.inputTokens, "input_tokens_details": ["cached_tokens": 0, "cache_write_tokens": 0],
            "output_tokens": reply.outputTokens, "output_tokens_details": ["reasoning_tokens": 0],
            "total_tokens": reply.inputTokens + reply.outputTokens,
        ]
        let part: [String: Any] = ["type": "output_text", "text": text, "annotations": [Any]()]
        let item: [String: Any] = ["type": "message", "id": "msg_\(id)", "status": "completed", "role": "assistant", "content": [part]]
        let status = reply.truncated ? "incomplete" : "completed"
        func response(_ state: String, output: [Any]) -> [String: Any] {
            ["id": id, "object": "response", "created_at": 1_700_000_000, "status": state, "model": model, "output": output,
             "usage": state == "in_progress" ? NSNull() : usage, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [Any]()]
        }
        guard json["stream"] as? Bool == true else {
            return .json(200, response(status, output: [item]))
        }
        var openItem = item
        openItem["status"] = "in_progress"
        openItem["content"] = [Any]()
        var events: [[String: Any]] = [
            ["type": "response.created", "response": response("in_progress", output: [])],
            ["type": "response.output_item.added", "output_index": 0, "item": openItem],
            ["type": "response.content_part.added", "item_id": "msg_\(id)", "output_index": 0, "content_index": 0,
             "part": ["type": "output_text", "text": "", "annotations": [Any]()]],
        ]
        for start in stride(from: 0, to: reply.words.count, by: 8) {
            let piece = reply.words[start..<min(start + 8, reply.words.count)].joined(separator: " ")
            events.append(["type": "response.output_text.delta", "item_id": "msg_\(id)", "output_index": 0, "content_index": 0,
                           "delta": (start == 0 ? "" : " ") + piece])
        }
        events.append(["type": "response.output_text.done", "item_id": "msg_\(id)", "output_index": 0, "content_index": 0, "text": text])
        events.append(["type": "response.content_part.done", "item_id": "msg_\(id)", "output_index": 0, "content_index": 0, "part": part])
        events.append(["type": "response.output_item.done", "output_index": 0, "item": item])
        events.append(["type": "response.\(status)", "response": response(status, output: [item])])
        let lines = events.enumerated().map { index, event -> String in
            var numbered = event
            numbered["sequence_number"] = index
            return "event: \(event["type"] as? String ?? "")\ndata: \(Conclusion.encode(numbered))\n\n"
        }
        return HTTPResponse(status: 200, headers: [("Content-Type", "text/event-stream")], body: .stream(EventList(lines, delayMilliseconds: eventDelayMilliseconds)))
    }

    // MARK: - Anthropic

    private func messages(_ json: [String: Any]) -> HTTPResponse {
        let model = json["model"] as? String ?? "claude-sonnet-4-5"
        let reply = SimulatedProvider.reply(to: json, capField: ["max_tokens"])
        let id = "msg_sim\(reply.inputTokens)"
        let stopReason = reply.truncated ? "max_tokens" : "end_turn"
        guard json["stream"] as? Bool == true else {
            return .json(200, [
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [["type": "text", "text": reply.words.joined(separator: " ")]],
                "stop_reason": stopReason, "stop_sequence": NSNull(),
                "usage": ["input_tokens": reply.inputTokens, "output_tokens": reply.outputTokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0],
            ])
        }
        func event(_ name: String, _ object: [String: Any]) -> String { "event: \(name)\ndata: \(Conclusion.encode(object))\n\n" }
        var events = [
            event("message_start", ["type": "message_start", "message": [
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [Any](), "stop_reason": NSNull(), "stop_sequence": NSNull(),
                "usage": ["input_tokens": reply.inputTokens, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0]]]),
            event("content_block_start", ["type": "content_block_start", "index": 0, "content_block": ["type": "text", "text": ""]]),
            event("ping", ["type": "ping"]),
        ]
        for start in stride(from: 0, to: reply.words.count, by: 8) {
            let piece = reply.words[start..<min(start + 8, reply.words.count)].joined(separator: " ")
            events.append(event("content_block_delta", ["type": "content_block_delta", "index": 0, "delta": ["type": "text_delta", "text": (start == 0 ? "" : " ") + piece]]))
        }
        events.append(event("content_block_stop", ["type": "content_block_stop", "index": 0]))
        events.append(event("message_delta", ["type": "message_delta", "delta": ["stop_reason": stopReason, "stop_sequence": NSNull()], "usage": ["output_tokens": reply.outputTokens]]))
        events.append(event("message_stop", ["type": "message_stop"]))
        return HTTPResponse(status: 200, headers: [("Content-Type", "text/event-stream")], body: .stream(EventList(events, delayMilliseconds: eventDelayMilliseconds)))
    }
}

/// Server-sent events handed out one per read, so clients see a real stream.
final class EventList: ResponseStream, @unchecked Sendable {
    // One connection thread reads it from start to end.
    private var events: [String]
    private var index = 0
    private let delayMilliseconds: Int

    init(_ events: [String], delayMilliseconds: Int) {
        self.events = events
        self.delayMilliseconds = delayMilliseconds
    }

    func next() -> [UInt8]? {
        guard index < events.count else { return nil }
        if index > 0 && delayMilliseconds > 0 { usleep(useconds_t(delayMilliseconds * 1000)) }
        defer { index += 1 }
        return Array(events[index].utf8)
    }

    func finish(clientGone: Bool) {}
}
