import Foundation

/// A normal, well-formed completion whose text is the policy's message to the
/// agent, in the client's API and streamed if the client streamed. It costs
/// nothing because no provider is called.
enum Conclusion {
    static func response(for call: ParsedCall, text: String) -> HTTPResponse {
        let id = "mgrun-\(UUID().uuidString.prefix(8).lowercased())"
        let created = Int(Date().timeIntervalSince1970)
        switch call.endpoint {
        case .chatCompletions:
            if call.stream {
                var events: [[String: Any]] = [
                    chunk(id, created, call.model, delta: ["role": "assistant", "content": text], finish: nil),
                    chunk(id, created, call.model, delta: [:], finish: "stop"),
                ]
                if call.clientWantsUsage {
                    events.append(["id": id, "object": "chat.completion.chunk", "created": created, "model": call.model,
                                   "choices": [Any](), "usage": zeroOpenAIUsage])
                }
                let body = events.map { "data: \(encode($0))\n\n" }.joined() + "data: [DONE]\n\n"
                return sse(body)
            }
            return .json(200, [
                "id": id, "object": "chat.completion", "created": created, "model": call.model,
                "choices": [["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": "stop", "logprobs": NSNull()]],
                "usage": zeroOpenAIUsage,
            ])
        case .messages:
            let usage: [String: Any] = ["input_tokens": 0, "output_tokens": 0]
            if call.stream {
                let events: [(String, [String: Any])] = [
                    ("message_start", ["type": "message_start", "message": [
                        "id": id, "type": "message", "role": "assistant", "model": call.model, "content": [Any](),
                        "stop_reason": NSNull(), "stop_sequence": NSNull(), "usage": usage]]),
                    ("content_block_start", ["type": "content_block_start", "index": 0, "content_block": ["type": "text", "text": ""]]),
                    ("content_block_delta", ["type": "content_block_delta", "index": 0, "delta": ["type": "text_delta", "text": text]]),
                    ("content_block_stop", ["type": "content_block_stop", "index": 0]),
                    ("message_delta", ["type": "message_delta", "delta": ["stop_reason": "end_turn", "stop_sequence": NSNull()], "usage": ["output_tokens": 0]]),
                    ("message_stop", ["type": "message_stop"]),
                ]
                return sse(events.map { "event: \($0.0)\ndata: \(encode($0.1))\n\n" }.joined())
            }
            return .json(200, [
                "id": id, "type": "message", "role": "assistant", "model": call.model,
                "content": [["type": "text", "text": text]], "stop_reason": "end_turn", "stop_sequence": NSNull(), "usage": usage,
            ])
        case .embeddings:
            // An embedding cannot carry a message; callers refuse instead.
            return .json(500, ["error": ["message": "no conclusion for embeddings", "type": "api_error"]])
        }
    }

    private static var zeroOpenAIUsage: [String: Any] { ["prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0] }

    private static func chunk(_ id: String, _ created: Int, _ model: String, delta: [String: Any], finish: String?) -> [String: Any] {
        ["id": id, "object": "chat.completion.chunk", "created": created, "model": model,
         "choices": [["index": 0, "delta": delta, "finish_reason": finish ?? NSNull()] as [String: Any]], "usage": NSNull()]
    }

    static func encode(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func sse(_ body: String) -> HTTPResponse {
        HTTPResponse(status: 200, headers: [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")], body: .bytes(Array(body.utf8)))
    }
}
