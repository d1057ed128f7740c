import Foundation
import Testing
@testable import MGProxy

// MARK: - Helpers

private func listKey(_ endpoint: Endpoint) -> String {
    endpoint == .responses ? "input" : "messages"
}

/// Serializes with sorted keys, so an element encodes to the same bytes alone as inside a list.
private func encode(_ object: Any) throws -> [UInt8] {
    Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
}

private func decode(_ bytes: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
}

private func trim(_ request: [String: Any], _ endpoint: Endpoint, limit: Int) throws -> ContextTrimmer.Outcome {
    try ContextTrimmer.trim(body: encode(request), endpoint: endpoint, maxContextTokens: limit)
}

/// An outcome other than the one a test expects, summarised without the body bytes.
private struct UnexpectedOutcome: Error, CustomStringConvertible {
    var outcome: ContextTrimmer.Outcome

    var description: String {
        switch outcome {
        case .unchanged: return "unexpected outcome: unchanged"
        case .trimmed(let result): return "unexpected outcome: trimmed, \(result.removedMessages) messages removed"
        case .cannotFit(let minimum, _): return "unexpected outcome: cannot fit, minimum \(minimum) tokens"
        }
    }
}

private func trimmedRequest(_ outcome: ContextTrimmer.Outcome) throws -> ContextTrimmer.TrimmedRequest {
    guard case .trimmed(let result) = outcome else { throw UnexpectedOutcome(outcome: outcome) }
    return result
}

private func minimumTokens(_ outcome: ContextTrimmer.Outcome) throws -> (tokens: Int, message: String) {
    guard case .cannotFit(let minimum, let message) = outcome else { throw UnexpectedOutcome(outcome: outcome) }
    return (minimum, message)
}

private func trimmed(_ request: [String: Any], _ endpoint: Endpoint, limit: Int) throws -> ContextTrimmer.TrimmedRequest {
    try trimmedRequest(trim(request, endpoint, limit: limit))
}

/// Returns the proxy's own input estimate for a body.
private func proxyEstimate(_ body: [UInt8], _ endpoint: Endpoint) throws -> Int {
    try ParsedCall(endpoint: endpoint, body: body).inputTokensEstimate
}

/// Returns the proxy's estimate for `request` with only `kept` in its list: the
/// smallest limit at which trimming can keep exactly those messages.
private func estimate(keeping kept: [[String: Any]], of request: [String: Any], _ endpoint: Endpoint) throws -> Int {
    var copy = request
    copy[listKey(endpoint)] = kept
    return try proxyEstimate(encode(copy), endpoint)
}

/// Returns the `tag` of each element in the body's list, or -1 for an element without one.
private func tags(_ body: [UInt8], _ endpoint: Endpoint) throws -> [Int] {
    let list = try #require(try decode(body)[listKey(endpoint)] as? [[String: Any]])
    return list.map { $0["tag"] as? Int ?? -1 }
}

private let filler = String(repeating: "x", count: 200)

/// Builds a message with a `tag` that identifies it in the trimmed list. Providers would
/// reject the extra key, but the trimmer and the proxy's estimate ignore it.
private func message(_ role: String, _ tag: Int, _ content: Any = filler) -> [String: Any] {
    ["role": role, "content": content, "tag": tag]
}

private func chatRequest(_ messages: [[String: Any]]) -> [String: Any] {
    ["model": "gpt-4o", "max_tokens": 256, "messages": messages]
}

private func anthropicRequest(_ messages: [[String: Any]]) -> [String: Any] {
    ["model": "claude-sonnet-4-5", "max_tokens": 256, "system": "be brief", "messages": messages]
}

private func responsesRequest(_ items: [[String: Any]]) -> [String: Any] {
    ["model": "gpt-4.1", "instructions": "be brief", "input": items]
}

private func toolCalls(_ tag: Int, ids: [String]) -> [String: Any] {
    let calls: [[String: Any]] = ids.map { ["id": $0, "type": "function", "function": ["name": "search", "arguments": "{\"q\":\"\($0)\"}"]] }
    return ["role": "assistant", "content": NSNull(), "tool_calls": calls, "tag": tag]
}

private func toolResult(_ tag: Int, id: String) -> [String: Any] {
    ["role": "tool", "tool_call_id": id, "content": filler, "tag": tag]
}

private func toolUse(_ tag: Int, ids: [String]) -> [String: Any] {
    let blocks: [[String: Any]] = ids.map { ["type": "tool_use", "id": $0, "name": "search", "input": ["q": $0]] }
    return message("assistant", tag, [["type": "text", "text": "searching"]] + blocks)
}

private func toolResults(_ tag: Int, ids: [String]) -> [String: Any] {
    message("user", tag, ids.map { ["type": "tool_result", "tool_use_id": $0, "content": filler] as [String: Any] })
}

// MARK: - Fitting and dropping

@Suite struct ContextTrimmerTests {
    @Test func fitsReturnsUnchanged() throws {
        let request = chatRequest([message("user", 0), message("assistant", 1)])
        #expect(try trim(request, .chatCompletions, limit: 100_000) == .unchanged)
    }

    @Test func exactFitReturnsUnchanged() throws {
        let request = chatRequest([message("user", 0), message("assistant", 1), message("user", 2)])
        let estimate = try proxyEstimate(encode(request), .chatCompletions)
        #expect(try trim(request, .chatCompletions, limit: estimate) == .unchanged)
        #expect(try trimmed(request, .chatCompletions, limit: estimate - 1).removedMessages == 1)
    }

    @Test func embeddingsReturnUnchanged() throws {
        let request: [String: Any] = ["model": "text-embedding-3-small", "input": String(repeating: "word ", count: 1_000)]
        #expect(try trim(request, .embeddings, limit: 1) == .unchanged)
    }

    @Test func dropsOldestFirst() throws {
        let conversation = (0..<6).map { message($0 % 2 == 0 ? "user" : "assistant", $0) }
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: Array(conversation[3...]), of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try tags(result.body, .chatCompletions) == [3, 4, 5])
        #expect(result.removedMessages == 3)
        #expect(result.estimatedTokensAfter == limit)
    }

    @Test func limitBelowDropsOneMore() throws {
        let conversation = (0..<6).map { message($0 % 2 == 0 ? "user" : "assistant", $0) }
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: Array(conversation[3...]), of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit - 1)
        #expect(try tags(result.body, .chatCompletions) == [4, 5])
        #expect(result.removedMessages == 4)
    }

    @Test func keepsSystemAndDeveloperAnywhere() throws {
        let conversation = [message("system", 0), message("user", 1), message("assistant", 2), message("developer", 3),
                            message("user", 4), message("assistant", 5), message("user", 6)]
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: [conversation[0], conversation[3], conversation[6]], of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try tags(result.body, .chatCompletions) == [0, 3, 6])
        #expect(result.removedMessages == 4)
    }

    @Test func keepsNewestTurnAfterTrailingSystem() throws {
        let conversation = [message("user", 0), message("assistant", 1), message("user", 2), message("system", 3)]
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: [conversation[2], conversation[3]], of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try tags(result.body, .chatCompletions) == [2, 3])
    }

    @Test func removesOnlyWhiteSpaceWhenThatFits() throws {
        var elements: [String] = []
        for element in [message("user", 0), message("assistant", 1)] {
            elements.append(String(decoding: try encode(element), as: UTF8.self))
        }
        let compact = #"{"model":"gpt-4o","messages":["# + elements.joined(separator: ",") + "]}"
        let spaced = #"{"model":"gpt-4o","messages":[ "# + elements.joined(separator: String(repeating: " ", count: 400) + ",") + " ]}"
        let limit = try proxyEstimate(Array(compact.utf8), .chatCompletions)
        let outcome = try ContextTrimmer.trim(body: Array(spaced.utf8), endpoint: .chatCompletions, maxContextTokens: limit)
        #expect(outcome == .trimmed(ContextTrimmer.TrimmedRequest(
            body: Array(compact.utf8), removedMessages: 0,
            estimatedTokensBefore: try proxyEstimate(Array(spaced.utf8), .chatCompletions), estimatedTokensAfter: limit)))
    }

    @Test func nonObjectElementIsDroppable() throws {
        let body = #"{"model":"gpt-4o","messages":["stray",{"role":"user","content":"\#(filler)"}]}"#
        let expected = #"{"model":"gpt-4o","messages":[{"role":"user","content":"\#(filler)"}]}"#
        let limit = try proxyEstimate(Array(expected.utf8), .chatCompletions)
        let result = try trimmedRequest(ContextTrimmer.trim(body: Array(body.utf8), endpoint: .chatCompletions, maxContextTokens: limit))
        #expect(result.removedMessages == 1)
        #expect(String(decoding: result.body, as: UTF8.self) == expected)
    }

    // MARK: - OpenAI tool calls

    @Test func dropsParallelToolCallsWhole() throws {
        let conversation = [message("user", 0), toolCalls(1, ids: ["a", "b", "c"]),
                            toolResult(2, id: "a"), toolResult(3, id: "b"), toolResult(4, id: "c"),
                            message("assistant", 5), message("user", 6)]
        let request = chatRequest(conversation)
        // This limit would fit the last tool result without its call.
        let limit = try estimate(keeping: Array(conversation[4...]), of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try tags(result.body, .chatCompletions) == [5, 6])
        #expect(result.removedMessages == 5)
    }

    @Test func keepsParallelToolCallsWhole() throws {
        let conversation = [message("user", 0), toolCalls(1, ids: ["a", "b"]),
                            toolResult(2, id: "b"), toolResult(3, id: "a"), message("user", 4)]
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: Array(conversation[1...]), of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try tags(result.body, .chatCompletions) == [1, 2, 3, 4])
    }

    @Test func keepsCallOfNewestToolResult() throws {
        let conversation = [message("user", 0), toolCalls(1, ids: ["a"]), toolResult(2, id: "a")]
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: Array(conversation[1...]), of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try tags(result.body, .chatCompletions) == [1, 2])
    }

    @Test func repeatedCallIDBelongsToLatestCall() throws {
        let conversation = [message("user", 0), toolCalls(1, ids: ["call_0"]), toolResult(2, id: "call_0"),
                            message("user", 3), toolCalls(4, ids: ["call_0"]), toolResult(5, id: "call_0"), message("user", 6)]
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: Array(conversation[3...]), of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try tags(result.body, .chatCompletions) == [3, 4, 5, 6])
    }

    @Test func groupsLegacyFunctionCall() throws {
        let call: [String: Any] = ["role": "assistant", "content": NSNull(), "tag": 1,
                                   "function_call": ["name": "search", "arguments": "{}"]]
        let answer: [String: Any] = ["role": "function", "name": "search", "content": filler, "tag": 2]
        let conversation = [message("user", 0), call, answer, message("user", 3)]
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: Array(conversation[2...]), of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try tags(result.body, .chatCompletions) == [3])
    }

    // MARK: - Anthropic Messages

    @Test func anthropicDropsToolPairWhole() throws {
        let conversation = [message("user", 0, String(repeating: "task ", count: 400)), toolUse(1, ids: ["t1", "t2"]),
                            toolResults(2, ids: ["t1", "t2"]), message("assistant", 3), message("user", 4)]
        let request = anthropicRequest(conversation)
        // This limit would fit the tool results without the tool_use message.
        let limit = try estimate(keeping: Array(conversation[2...]), of: request, .messages)
        let result = try trimmed(request, .messages, limit: limit)
        #expect(try tags(result.body, .messages) == [4])
    }

    @Test func anthropicStartsWithUser() throws {
        let conversation = (0..<5).map { message($0 % 2 == 0 ? "user" : "assistant", $0) }
        let request = anthropicRequest(conversation)
        let limit = try estimate(keeping: Array(conversation[3...]), of: request, .messages)
        let result = try trimmed(request, .messages, limit: limit)
        #expect(try tags(result.body, .messages) == [4])
        #expect(result.removedMessages == 4)
    }

    @Test func anthropicKeepsTaskOfAgentLoop() throws {
        let conversation = [message("user", 0), toolUse(1, ids: ["t1"]), toolResults(2, ids: ["t1"]),
                            toolUse(3, ids: ["t2"]), toolResults(4, ids: ["t2"])]
        let request = anthropicRequest(conversation)
        let limit = try estimate(keeping: [conversation[0], conversation[3], conversation[4]], of: request, .messages)
        let result = try trimmed(request, .messages, limit: limit)
        #expect(try tags(result.body, .messages) == [0, 3, 4])
        #expect(result.removedMessages == 2)
    }

    @Test func anthropicCannotFitWithoutLeadingUser() throws {
        // The first message is the assistant's, so no user message can lead the trimmed list.
        let conversation = [message("assistant", 0), toolUse(1, ids: ["t1"]), toolResults(2, ids: ["t1"])]
        let request = anthropicRequest(conversation)
        let whole = try proxyEstimate(encode(request), .messages)
        #expect(try minimumTokens(trim(request, .messages, limit: 10)).tokens == whole)
    }

    @Test func anthropicKeepsTopLevelFields() throws {
        var request = anthropicRequest((0..<5).map { message($0 % 2 == 0 ? "user" : "assistant", $0) })
        request["system"] = [["type": "text", "text": "be brief", "cache_control": ["type": "ephemeral"]]]
        request["tools"] = [["name": "search", "input_schema": ["type": "object"]]]
        let result = try trimmed(request, .messages, limit: 150)
        var output = try decode(result.body)
        output["messages"] = nil
        request["messages"] = nil
        #expect(try encode(output) == encode(request))
    }

    // MARK: - OpenAI Responses

    @Test func responsesDropsFunctionCallPairWhole() throws {
        let items: [[String: Any]] = [
            message("user", 0),
            ["type": "function_call", "call_id": "c1", "name": "search", "arguments": "{}", "tag": 1],
            ["type": "function_call_output", "call_id": "c1", "output": filler, "tag": 2],
            ["type": "message", "role": "assistant", "content": filler, "tag": 3],
            message("user", 4),
        ]
        let request = responsesRequest(items)
        let limit = try estimate(keeping: Array(items[2...]), of: request, .responses)
        let result = try trimmed(request, .responses, limit: limit)
        #expect(try tags(result.body, .responses) == [3, 4])
    }

    @Test func responsesReasoningStaysWithNextItem() throws {
        let items: [[String: Any]] = [
            message("user", 0),
            ["type": "reasoning", "id": "rs_1", "summary": [], "tag": 1],
            ["type": "function_call", "call_id": "c1", "name": "search", "arguments": "{}", "tag": 2],
            ["type": "function_call_output", "call_id": "c1", "output": filler, "tag": 3],
            message("user", 4),
        ]
        let request = responsesRequest(items)
        let withReasoning = try estimate(keeping: Array(items[1...]), of: request, .responses)
        #expect(try tags(trimmed(request, .responses, limit: withReasoning).body, .responses) == [1, 2, 3, 4])
        let withoutReasoning = try estimate(keeping: Array(items[2...]), of: request, .responses)
        #expect(try tags(trimmed(request, .responses, limit: withoutReasoning).body, .responses) == [4])
    }

    @Test func responsesKeepsApprovalWithRequest() throws {
        let items: [[String: Any]] = [
            message("user", 0),
            ["type": "mcp_approval_request", "id": "apr_1", "name": "deploy", "arguments": "{}", "server_label": "ops", "tag": 1],
            ["type": "mcp_approval_response", "approval_request_id": "apr_1", "approve": true, "tag": 2],
        ]
        let request = responsesRequest(items)
        let limit = try estimate(keeping: Array(items[2...]), of: request, .responses)
        let minimum = try minimumTokens(trim(request, .responses, limit: limit)).tokens
        #expect(try minimum == estimate(keeping: Array(items[1...]), of: request, .responses))
    }

    @Test func responsesKeepsInstructionsAndSystemItems() throws {
        let items: [[String: Any]] = [
            ["type": "message", "role": "developer", "content": "use tools", "tag": 0],
            message("user", 1), message("assistant", 2), message("system", 3), message("user", 4),
        ]
        let request = responsesRequest(items)
        let limit = try estimate(keeping: [items[0], items[3], items[4]], of: request, .responses)
        let result = try trimmed(request, .responses, limit: limit)
        #expect(try tags(result.body, .responses) == [0, 3, 4])
        #expect(try decode(result.body)["instructions"] as? String == "be brief")
    }

    @Test func responsesStringInputFits() throws {
        let request: [String: Any] = ["model": "gpt-4.1", "input": String(repeating: "word ", count: 1_000)]
        #expect(try trim(request, .responses, limit: 10_000) == .unchanged)
    }

    @Test func responsesStringInputCannotFit() throws {
        let request: [String: Any] = ["model": "gpt-4.1", "input": String(repeating: "word ", count: 1_000)]
        let whole = try proxyEstimate(encode(request), .responses)
        #expect(try minimumTokens(trim(request, .responses, limit: 100)).tokens == whole)
    }

    // MARK: - Limits that cannot be met

    @Test func newestTurnTooBigCannotFit() throws {
        let conversation = [message("system", 0), message("user", 1), message("assistant", 2),
                            message("user", 3, String(repeating: "y", count: 4_000))]
        let request = chatRequest(conversation)
        let minimum = try estimate(keeping: [conversation[0], conversation[3]], of: request, .chatCompletions)
        #expect(try minimumTokens(trim(request, .chatCompletions, limit: 100)).tokens == minimum)
    }

    @Test func cannotFitMessageNamesLimit() throws {
        let request = chatRequest([message("user", 0, String(repeating: "y", count: 4_000))])
        let (minimum, text) = try minimumTokens(trim(request, .chatCompletions, limit: 100))
        #expect(text.contains("optimization.context_trimming.max_context_tokens (100)"))
        #expect(text.contains("an estimated \(minimum) input tokens"))
    }

    // MARK: - Estimates and the rewritten body

    @Test func imagePartCountsFixedTokens() throws {
        let image: [[String: Any]] = [["type": "text", "text": "what is this?"],
                                      ["type": "image_url", "image_url": ["url": "https://example.com/a.png"]]]
        let conversation = [message("user", 0, image), message("assistant", 1), message("user", 2)]
        let request = chatRequest(conversation)
        let limit = try estimate(keeping: Array(conversation[1...]), of: request, .chatCompletions)
        let result = try trimmed(request, .chatCompletions, limit: limit)
        #expect(try result.estimatedTokensBefore == proxyEstimate(encode(request), .chatCompletions))
        #expect(result.estimatedTokensBefore - result.estimatedTokensAfter > ParsedCall.tokensPerMediaPart)
    }

    @Test func textPartsCountByBytesOnly() throws {
        let parts: [[String: Any]] = [["type": "text", "text": filler], ["type": "text", "text": filler]]
        let conversation = [message("user", 0, parts), message("assistant", 1), message("user", 2)]
        let request = chatRequest(conversation)
        let result = try trimmed(request, .chatCompletions, limit: 100)
        #expect(try result.estimatedTokensBefore == proxyEstimate(encode(request), .chatCompletions))
        #expect(result.estimatedTokensBefore - result.estimatedTokensAfter < ParsedCall.tokensPerMediaPart)
    }

    @Test func anthropicNestedImageCountsLikeProxy() throws {
        let image: [String: Any] = ["type": "image", "source": ["type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="]]
        let conversation = [message("user", 0, [image]), message("assistant", 1), message("user", 2)]
        let request = anthropicRequest(conversation)
        let result = try trimmed(request, .messages, limit: 200)
        #expect(try result.estimatedTokensBefore == proxyEstimate(encode(request), .messages))
        #expect(try result.estimatedTokensAfter == proxyEstimate(result.body, .messages))
    }

    @Test func otherFieldsUnchanged() throws {
        var request = chatRequest((0..<6).map { message($0 % 2 == 0 ? "user" : "assistant", $0) })
        request["temperature"] = 0.25
        request["stream"] = true
        request["stream_options"] = ["include_usage": true]
        request["tools"] = [["type": "function", "function": ["name": "search", "parameters": ["type": "object"]]]]
        request["metadata"] = ["run": "r1", "nested": ["a": [1, 2, 3]]]
        let result = try trimmed(request, .chatCompletions, limit: 200)
        var output = try decode(result.body)
        output["messages"] = nil
        request["messages"] = nil
        #expect(try encode(output) == encode(request))
    }

    @Test func keptBytesStayAsSent() throws {
        let body = #"{"model": "gpt-4o",  "temperature": 1.50, "messages": [ {"role":"user","content":"\#(filler)"} , "#
            + #"{"content": "caf\u00e9 \#(filler)", "role": "user"} ], "max_tokens": 10}"#
        let expected = #"{"model": "gpt-4o",  "temperature": 1.50, "messages": [{"content": "caf\u00e9 \#(filler)", "role": "user"}], "max_tokens": 10}"#
        let limit = try proxyEstimate(Array(expected.utf8), .chatCompletions)
        let result = try trimmedRequest(ContextTrimmer.trim(body: Array(body.utf8), endpoint: .chatCompletions, maxContextTokens: limit))
        #expect(String(decoding: result.body, as: UTF8.self) == expected)
    }

    @Test(arguments: [
        (#"not json"#, Endpoint.chatCompletions),
        (#"[1,2]"#, .chatCompletions),
        (#"{"model":"m"}"#, .chatCompletions),
        (#"{"model":"m","messages":{}}"#, .messages),
        (#"{"model":"m"}"#, .responses),
    ])
    func malformedBodyThrows(text: String, endpoint: Endpoint) {
        #expect(throws: ClientError.self) { try ContextTrimmer.trim(body: Array(text.utf8), endpoint: endpoint, maxContextTokens: 1) }
    }

    @Test func invalidUTF8MessageThrows() {
        let body = Array(#"{"model":"m","messages":[{"role":"user","content":""#.utf8) + [0xFF] + Array(#""}]}"#.utf8)
        #expect(throws: ClientError.self) { try ContextTrimmer.trim(body: body, endpoint: .chatCompletions, maxContextTokens: 1) }
    }
}

// MARK: - Random conversations

/// SplitMix64, a seeded generator, so a failing seed can be rerun.
private struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// A random but valid conversation in one wire format, with the group of every
/// message: the messages that must be dropped or kept together.
private struct RandomConversation {
    let endpoint: Endpoint
    var messages: [[String: Any]] = []
    /// The group of each message, or nil for a pinned (system or developer) message.
    var groups: [Int?] = []
    private var nextGroup = 0
    private var random: SeededGenerator

    init(_ endpoint: Endpoint, seed: UInt64) {
        self.endpoint = endpoint
        self.random = SeededGenerator(state: seed)
        switch endpoint {
        case .chatCompletions: buildChat()
        case .messages: buildAnthropic()
        case .responses, .embeddings: buildResponses()
        }
    }

    var request: [String: Any] {
        switch endpoint {
        case .chatCompletions:
            var request = chatRequest(messages)
            request["tools"] = [["type": "function", "function": ["name": "search", "parameters": ["type": "object"]]]]
            request["temperature"] = 0.5
            return request
        case .messages:
            var request = anthropicRequest(messages)
            request["tools"] = [["name": "search", "input_schema": ["type": "object"]]]
            return request
        case .responses, .embeddings:
            var request = responsesRequest(messages)
            request["max_output_tokens"] = 512
            return request
        }
    }

    private mutating func chance(_ percent: Int) -> Bool {
        Int.random(in: 0..<100, using: &random) < percent
    }

    private mutating func count(_ range: ClosedRange<Int>) -> Int {
        Int.random(in: range, using: &random)
    }

    /// Text of 0 to 400 bytes, with multi-byte characters and characters JSON escapes.
    private mutating func text() -> String {
        let pieces = ["lorem ", "ipsum ", "café ", "漢字 ", "🙂 ", "\"quoted\" ", "a/b ", "\n", "\\"]
        var result = ""
        for _ in 0..<count(0...60) { result += pieces[count(0...(pieces.count - 1))] }
        return result
    }

    private mutating func add(_ group: [[String: Any]]) {
        for var message in group {
            message["tag"] = messages.count
            messages.append(message)
            groups.append(nextGroup)
        }
        nextGroup += 1
    }

    private mutating func addPinned(_ message: [String: Any]) {
        var message = message
        message["tag"] = messages.count
        messages.append(message)
        groups.append(nil)
    }

    private mutating func buildChat() {
        if chance(60) { addPinned(["role": "system", "content": text()]) }
        for _ in 0..<count(1...14) {
            switch count(0...9) {
            case 0:
                addPinned(["role": chance(50) ? "system" : "developer", "content": text()])
            case 1, 2:
                let ids = (0..<count(1...3)).map { "call_\(messages.count)_\($0)" }
                let calls = ids.map { ["id": $0, "type": "function", "function": ["name": "search", "arguments": "{}"]] as [String: Any] }
                var group: [[String: Any]] = [["role": "assistant", "content": NSNull(), "tool_calls": calls]]
                for id in ids.shuffled(using: &random) { group.append(["role": "tool", "tool_call_id": id, "content": text()]) }
                add(group)
            case 3:
                add([["role": "assistant", "content": NSNull(), "function_call": ["name": "search", "arguments": "{}"]],
                     ["role": "function", "name": "search", "content": text()]])
            case 4:
                let image: [String: Any] = ["type": "image_url", "image_url": ["url": "https://example.com/a.png"]]
                add([["role": "user", "content": [["type": "text", "text": text()], image]]])
            case 5, 6:
                add([["role": "assistant", "content": text()]])
            default:
                add([["role": "user", "content": text()]])
            }
        }
    }

    /// Roles alternate, starting with the user, as the API requires.
    private mutating func buildAnthropic() {
        add([["role": "user", "content": text()]])
        for _ in 0..<count(0...7) {
            if chance(50) {
                add([["role": "assistant", "content": text()]])
                add([["role": "user", "content": chance(20) ? [imageBlock()] : text()]])
            } else {
                let ids = (0..<count(1...3)).map { "toolu_\(messages.count)_\($0)" }
                let uses = ids.map { ["type": "tool_use", "id": $0, "name": "search", "input": ["q": "x"]] as [String: Any] }
                var results = ids.map { ["type": "tool_result", "tool_use_id": $0, "content": text()] as [String: Any] }
                if chance(30) { results.append(["type": "text", "text": text()]) }
                add([["role": "assistant", "content": [["type": "text", "text": text()]] + uses],
                     ["role": "user", "content": results]])
            }
        }
        // A trailing assistant message prefills the reply.
        if chance(20) { add([["role": "assistant", "content": text()]]) }
    }

    private func imageBlock() -> [String: Any] {
        ["type": "image", "source": ["type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="]]
    }

    private mutating func buildResponses() {
        if chance(50) { addPinned(["type": "message", "role": "developer", "content": text()]) }
        for _ in 0..<count(1...12) {
            switch count(0...9) {
            case 0:
                addPinned(["role": "system", "content": text()])
            case 1, 2:
                let callID = "call_\(messages.count)"
                var group: [[String: Any]] = []
                if chance(50) { group.append(["type": "reasoning", "id": "rs_\(messages.count)", "summary": []]) }
                group.append(["type": "function_call", "call_id": callID, "name": "search", "arguments": "{}"])
                group.append(["type": "function_call_output", "call_id": callID, "output": text()])
                add(group)
            case 3:
                add([["type": "reasoning", "id": "rs_\(messages.count)", "summary": []],
                     ["type": "message", "role": "assistant", "content": [["type": "output_text", "text": text()]]]])
            case 4:
                let image: [String: Any] = ["type": "input_image", "image_url": "https://example.com/a.png"]
                add([["role": "user", "content": [["type": "input_text", "text": text()], image]]])
            case 5, 6:
                add([["type": "message", "role": "assistant", "content": text()]])
            default:
                add([["role": "user", "content": text()]])
            }
        }
    }
}

@Suite struct ContextTrimmerPropertyTests {
    static let seeds: Range<UInt64> = 0..<200

    @Test(arguments: [Endpoint.chatCompletions, .messages, .responses])
    func estimateNeverGrowsWhenMessageRemoved(endpoint: Endpoint) throws {
        for seed in Self.seeds {
            let conversation = RandomConversation(endpoint, seed: seed)
            let whole = try proxyEstimate(encode(conversation.request), endpoint)
            for index in conversation.messages.indices {
                var fewer = conversation.messages
                fewer.remove(at: index)
                let smaller = try estimate(keeping: fewer, of: conversation.request, endpoint)
                #expect(smaller <= whole, "seed \(seed), message \(index)")
            }
        }
    }

    @Test(arguments: [Endpoint.chatCompletions, .messages, .responses])
    func randomConversationsKeepRules(endpoint: Endpoint) throws {
        var outcomes: [String: Int] = [:]
        for seed in Self.seeds {
            var random = SeededGenerator(state: seed &* 7919)
            let conversation = RandomConversation(endpoint, seed: seed)
            let body = try encode(conversation.request)
            let before = try proxyEstimate(body, endpoint)
            let limit = Int.random(in: 0...(before + 20), using: &random)
            let outcome = try ContextTrimmer.trim(body: body, endpoint: endpoint, maxContextTokens: limit)
            switch outcome {
            case .unchanged:
                outcomes["unchanged", default: 0] += 1
                #expect(before <= limit, "seed \(seed)")
            case .cannotFit(let minimum, _):
                outcomes["cannotFit", default: 0] += 1
                try checkCannotFit(conversation, minimum: minimum, limit: limit, seed: seed)
            case .trimmed(let result):
                outcomes["trimmed", default: 0] += 1
                #expect(result.estimatedTokensBefore == before, "seed \(seed)")
                try checkTrimmed(conversation, result, limit: limit, seed: seed)
            }
        }
        // Every kind of outcome must occur, or the seeds test too little.
        #expect(outcomes["unchanged", default: 0] > 0)
        #expect(outcomes["cannotFit", default: 0] > 0)
        #expect(outcomes["trimmed", default: 0] > 20)
    }

    private func checkCannotFit(_ conversation: RandomConversation, minimum: Int, limit: Int, seed: UInt64) throws {
        #expect(minimum > limit, "seed \(seed)")
        guard conversation.endpoint != .messages else { return }
        // Without Anthropic's leading-user rule the smallest request is the pinned messages and the newest group.
        let newest = conversation.groups.compactMap { $0 }.last
        let kept = conversation.messages.indices.filter { conversation.groups[$0] == nil || conversation.groups[$0] == newest }
        let smallest = try estimate(keeping: kept.map { conversation.messages[$0] }, of: conversation.request, conversation.endpoint)
        #expect(minimum == smallest, "seed \(seed)")
    }

    private func checkTrimmed(_ conversation: RandomConversation, _ result: ContextTrimmer.TrimmedRequest, limit: Int, seed: UInt64) throws {
        let endpoint = conversation.endpoint
        #expect(result.estimatedTokensAfter <= limit, "seed \(seed)")
        #expect(try result.estimatedTokensAfter == proxyEstimate(result.body, endpoint), "seed \(seed)")
        #expect(try ContextTrimmer.trim(body: result.body, endpoint: endpoint, maxContextTokens: limit) == .unchanged, "seed \(seed)")

        var output = try decode(result.body)
        var request = conversation.request
        output[listKey(endpoint)] = nil
        request[listKey(endpoint)] = nil
        #expect(try encode(output) == encode(request), "seed \(seed)")

        let kept = try tags(result.body, endpoint)
        let keptSet = Set(kept)
        #expect(kept == kept.sorted(), "seed \(seed)")
        #expect(result.removedMessages == conversation.messages.count - kept.count, "seed \(seed)")
        for (index, group) in conversation.groups.enumerated() {
            guard let group else {
                #expect(keptSet.contains(index), "seed \(seed): pinned message \(index) dropped")
                continue
            }
            let members = conversation.groups.indices.filter { conversation.groups[$0] == group }
            #expect(members.allSatisfy(keptSet.contains) || !members.contains(where: keptSet.contains),
                    "seed \(seed): group of message \(index) split")
        }
        let last = try #require(conversation.groups.lastIndex { $0 != nil })
        #expect(keptSet.contains(last), "seed \(seed): newest message dropped")

        if endpoint == .messages {
            try checkAnthropicOrder(result.body, seed: seed)
        } else {
            try checkOldestDropped(conversation, kept: keptSet, limit: limit, seed: seed)
        }
    }

    /// Checks that the dropped messages are the oldest ones, and that keeping the
    /// newest dropped group as well would exceed the limit.
    private func checkOldestDropped(_ conversation: RandomConversation, kept: Set<Int>, limit: Int, seed: UInt64) throws {
        let droppable = conversation.messages.indices.filter { conversation.groups[$0] != nil }
        let dropped = droppable.filter { !kept.contains($0) }
        #expect(dropped == Array(droppable.prefix(dropped.count)), "seed \(seed)")
        guard let newestDropped = dropped.last else { return }
        let restored = conversation.messages.indices.filter {
            kept.contains($0) || conversation.groups[$0] == conversation.groups[newestDropped]
        }
        let restoredEstimate = try estimate(keeping: restored.map { conversation.messages[$0] }, of: conversation.request, conversation.endpoint)
        #expect(restoredEstimate > limit, "seed \(seed)")
    }

    private func checkAnthropicOrder(_ body: [UInt8], seed: UInt64) throws {
        let roles = try #require(try decode(body)["messages"] as? [[String: Any]]).map { $0["role"] as? String }
        #expect(roles.first == "user", "seed \(seed)")
        for (earlier, later) in zip(roles, roles.dropFirst()) {
            #expect(earlier != later, "seed \(seed): roles do not alternate")
        }
    }
}
