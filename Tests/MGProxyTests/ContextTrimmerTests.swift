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
