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
        case .responses:
            return responses(call: call, id: id, created: created, text: text)
        case .embeddings:
            // An embedding cannot carry a message; callers refuse instead.
            return .json(500, ["error": ["message": "no conclusion for embeddings", "type": "api_error"]])
        }
    }

    /// A Responses API response, or its event stream, whose one output message is `text`.
    private static func responses(call: ParsedCall, id: String, created: Int, text: String) -> HTTPResponse {
        let usage: [String: Any] = ["input_tokens": 0, "input_tokens_details": ["cached_tokens": 0, "cache_write_tokens": 0],
                                    "output_tokens": 0, "output_tokens_details": ["reasoning_tokens": 0], "total_tokens": 0]
        let part: [String: Any] = ["type": "output_text", "text": text, "annotations": [Any]()]
        let item: [String: Any] = ["type": "message", "id": "msg_\(id)", "status": "completed", "role": "assistant", "content": [part]]
        func response(_ status: String, output: [Any]) -> [String: Any] {
            ["id": "resp_\(id)", "object": "response", "created_at": created, "status": status, "model": call.model,
             "output": output, "usage": status == "completed" ? usage : NSNull(), "parallel_tool_calls": true, "tool_choice": "auto", "tools": [Any]()]
        }
        guard call.stream else { return .json(200, response("completed", output: [item])) }
        var inProgressItem = item
        inProgressItem["status"] = "in_progress"
        inProgressItem["content"] = [Any]()
        let events: [[String: Any]] = [
            ["type": "response.created", "response": response("in_progress", output: [])],
            ["type": "response.output_item.added", "output_index": 0, "item": inProgressItem],
            ["type": "response.content_part.added", "item_id": "msg_\(id)", "output_index": 0, "content_index": 0,
             "part": ["type": "output_text", "text": "", "annotations": [Any]()]],
            ["type": "response.output_text.delta", "item_id": "msg_\(id)", "output_index": 0, "content_index": 0, "delta": text],
            ["type": "response.output_text.done", "item_id": "msg_\(id)", "output_index": 0, "content_index": 0, "text": text],
            ["type": "response.content_part.done", "item_id": "msg_\(id)", "output_index": 0, "content_index": 0, "part": part],
            ["type": "response.output_item.done", "output_index": 0, "item": item],
            ["type": "response.completed", "response": response("completed", output: [item])],
        ]
        let body = events.enumerated().map { index, event in
            var numbered = event
            numbered["sequence_number"] = index
            return "event: \(event["type"] as? String ?? "")\ndata: \(encode(numbered))\n\n"
        }.joined()
        return sse(body)
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
