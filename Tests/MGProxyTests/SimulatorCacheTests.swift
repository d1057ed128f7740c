import Foundation
import Testing
@testable import MGProxy

/// Returns `count` bytes of repeated text. Another seed changes the first byte, so two fillers share no prefix.
private func filler(_ count: Int, seed: Character = "a") -> String {
    let word = "\(seed)bcdefg "
    return String(String(repeating: word, count: count / word.count + 1).prefix(count))
}

private func object(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}

private func encode(_ object: [String: Any]) -> [UInt8] {
    Array((try? JSONSerialization.data(withJSONObject: object)) ?? Data())
}

private func post(_ provider: SimulatedProvider, _ path: String, _ body: [String: Any]) -> String {
    let response = provider.handle(HTTPRequest(method: "POST", path: path, body: encode(body)))
    switch response.body {
    case .bytes(let bytes):
        return String(decoding: bytes, as: UTF8.self)
    case .stream(let stream):
        var text = ""
        while let piece = stream.next() { text += String(decoding: piece, as: UTF8.self) }
        return text
    }
}

private func chatUsage(_ provider: SimulatedProvider, model: String = "gpt-4o", _ messages: [[String: Any]]) -> [String: Any] {
    object(post(provider, "/v1/chat/completions", ["model": model, "max_tokens": 5, "messages": messages]))["usage"] as? [String: Any] ?? [:]
}

private func cachedTokens(_ usage: [String: Any], details: String = "prompt_tokens_details") -> Int? {
    (usage[details] as? [String: Any])?["cached_tokens"] as? Int
}

private func messagesUsage(_ provider: SimulatedProvider, _ body: [String: Any]) -> [String: Any] {
    var request = body
    request["model"] = request["model"] ?? "claude-sonnet-4-5"
    request["max_tokens"] = 5
    return object(post(provider, "/v1/messages", request))["usage"] as? [String: Any] ?? [:]
}

private var ephemeral: [String: Any] { ["type": "ephemeral"] }

@Suite struct SimulatedPromptTests {
    /// Computes the usage rule from before caching existed: ceil(B / 4) + 3 per message + 3.
    private func ruleTokens(textBytes: Int, messages: Int) -> Int { (textBytes + 3) / 4 + 3 * messages + 3 }

    @Test(arguments: [
        (#"{"messages":[{"role":"user","content":"hi"}]}"#, 2, 1),
        (#"{"system":"be brief","messages":[{"role":"user","content":"hello"},{"role":"assistant","content":"yes"}]}"#, 16, 2),
        (#"{"system":[{"type":"text","text":"abc"}],"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image","source":{}}]}]}"#, 4, 1),
        (#"{"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"text","text":"12345"}]}]}, 7]}"#, 5, 2),
        (#"{"instructions":"rules","input":"a plain string"}"#, 19, 1),
        (#"{"input":[{"role":"user","content":"four"},{"type":"function_call_output","output":"ignored"}]}"#, 4, 2),
    ])
    func tokenCountMatchesUsageRule(json: String, textBytes: Int, messages: Int) {
        let prompt = SimulatedPrompt(object(json))
        #expect(prompt.textBytes == textBytes)
        #expect(prompt.messageCount == messages)
        #expect(prompt.tokenCount == ruleTokens(textBytes: textBytes, messages: messages))
    }

    @Test func breakpointsEndAtMarkedBlocks() {
        let prompt = SimulatedPrompt([
            "system": [["type": "text", "text": "abcd", "cache_control": ephemeral]],
            "messages": [["role": "user", "content": [["type": "text", "text": "efgh", "cache_control": ["type": "ephemeral", "ttl": "1h"]]]]],
            "cache_control": ephemeral,
        ])
        // System text (4 bytes), then a 12-byte frame and 4 bytes of text. The top-level mark ends the last block.
        #expect(prompt.breakpoints == [.init(offset: 4, oneHour: false), .init(offset: 20, oneHour: true), .init(offset: 20, oneHour: false)])
    }

    @Test func ignoresOtherCacheControlTypes() {
        let prompt = SimulatedPrompt(["messages": [["role": "user", "content": [["type": "text", "text": "x", "cache_control": ["type": "persistent"]]]]]])
        #expect(prompt.breakpoints.isEmpty)
    }

    @Test func prefixHashesDependOnNamespaceAndBytes() {
        let first = SimulatedPrompt(["messages": [["role": "user", "content": "same start, then one"]]])
        let second = SimulatedPrompt(["messages": [["role": "user", "content": "same start, then two"]]])
        let a = first.prefixHashes(at: [20, 30], namespace: "m")
        let b = second.prefixHashes(at: [20, 30], namespace: "m")
        #expect(a[0] == b[0])
        #expect(a[1] != b[1])
        #expect(first.prefixHashes(at: [20], namespace: "n") != [a[0]])
    }
}

@Suite struct SimulatorOpenAICacheTests {
    @Test func repeatedPromptReportsWholeBlocks() {
        let provider = SimulatedProvider()
        let messages: [[String: Any]] = [["role": "user", "content": filler(7_000)]]
        let first = chatUsage(provider, messages)
        let second = chatUsage(provider, messages)
        let prompt = first["prompt_tokens"] as? Int ?? 0
        #expect(prompt == (7_000 + 3) / 4 + 6)
        #expect(cachedTokens(first) == 0)
        #expect(cachedTokens(second) == prompt / 128 * 128)
        #expect(second["prompt_tokens"] as? Int == prompt)
    }

    @Test func promptUnder1024TokensNeverCached() {
        let provider = SimulatedProvider()
        let messages: [[String: Any]] = [["role": "user", "content": filler(4_000)]]
        _ = chatUsage(provider, messages)
        let second = chatUsage(provider, messages)
        #expect((second["prompt_tokens"] as? Int ?? 0) < 1024)
        #expect(cachedTokens(second) == 0)
    }

    @Test func sharedPrefixRoundedDownTo128() {
        let provider = SimulatedProvider()
        let shared = filler(6_000)
        _ = chatUsage(provider, [["role": "user", "content": shared + filler(2_000, seed: "x")]])
        let usage = chatUsage(provider, [["role": "user", "content": shared + filler(2_000, seed: "y")]])
        // The frame (12 bytes) and the shared text are 6,012 bytes, 1,503 tokens: 11 whole blocks.
        #expect(cachedTokens(usage) == 1_408)
    }

    @Test func prefixShorterThan1024NotCached() {
        let provider = SimulatedProvider()
        let shared = filler(3_000)
        _ = chatUsage(provider, [["role": "user", "content": shared + filler(3_000, seed: "x")]])
        let usage = chatUsage(provider, [["role": "user", "content": shared + filler(3_000, seed: "y")]])
        #expect(cachedTokens(usage) == 0)
    }

    @Test func cacheKeptPerModelAndEndpoint() {
        let provider = SimulatedProvider()
        let text = filler(7_000)
        _ = chatUsage(provider, model: "gpt-4o", [["role": "user", "content": text]])
        #expect(cachedTokens(chatUsage(provider, model: "gpt-4o-mini", [["role": "user", "content": text]])) == 0)
        let responses = object(post(provider, "/v1/responses", ["model": "gpt-4o", "input": text]))["usage"] as? [String: Any] ?? [:]
        #expect(cachedTokens(responses, details: "input_tokens_details") == 0)
    }

    @Test func responsesRepeatReportsCachedInput() {
        let provider = SimulatedProvider()
        let body: [String: Any] = ["model": "gpt-4.1", "instructions": filler(5_000), "input": "question", "max_output_tokens": 5]
        _ = post(provider, "/v1/responses", body)
        let usage = object(post(provider, "/v1/responses", body))["usage"] as? [String: Any] ?? [:]
        let input = usage["input_tokens"] as? Int ?? 0
        #expect(cachedTokens(usage, details: "input_tokens_details") == input / 128 * 128)
        #expect((usage["input_tokens_details"] as? [String: Any])?["cache_write_tokens"] as? Int == 0)
    }

    @Test func streamedUsageChunkCarriesCachedTokens() {
        let provider = SimulatedProvider()
        let body: [String: Any] = ["model": "gpt-4o", "max_tokens": 5, "messages": [["role": "user", "content": filler(7_000)]],
                                   "stream": true, "stream_options": ["include_usage": true]]
        _ = post(provider, "/v1/chat/completions", body)
        let events = post(provider, "/v1/chat/completions", body)
        let usageLine = events.split(separator: "\n").first { $0.contains("\"prompt_tokens_details\"") }
        let usage = object(String(usageLine?.dropFirst("data: ".count) ?? ""))["usage"] as? [String: Any] ?? [:]
        #expect(cachedTokens(usage) == (usage["prompt_tokens"] as? Int ?? 0) / 128 * 128)
        #expect(cachedTokens(usage) ?? 0 > 0)
    }
}

@Suite struct SimulatorAnthropicCacheTests {
    private func system(_ text: String, ttl: String? = nil) -> [[String: Any]] {
        var control = ephemeral
        control["ttl"] = ttl
        return [["type": "text", "text": text, "cache_control": control]]
    }

    private func count(_ usage: [String: Any], _ key: String) -> Int? { usage[key] as? Int }

    @Test func writesThenReadsSystemPrefix() {
        let provider = SimulatedProvider()
        let body: [String: Any] = ["system": system(filler(6_000)), "messages": [["role": "user", "content": "a short question"]]]
        let first = messagesUsage(provider, body)
        let second = messagesUsage(provider, body)
        // The 6,000 bytes before the breakpoint are 1,500 tokens. After it come a frame, 16 bytes of text and the primer.
        #expect(count(first, "cache_creation_input_tokens") == 1_500)
        #expect(count(first, "cache_read_input_tokens") == 0)
        #expect(count(first, "input_tokens") == 3 + 4 + 3)
        #expect(count(second, "cache_creation_input_tokens") == 0)
        #expect(count(second, "cache_read_input_tokens") == 1_500)
        #expect(count(second, "input_tokens") == 10)
        #expect((first["cache_creation"] as? [String: Any])?["ephemeral_5m_input_tokens"] as? Int == 1_500)
    }

    @Test func withoutBreakpointAllInputUncached() {
        let provider = SimulatedProvider()
        let body: [String: Any] = ["system": filler(6_000), "messages": [["role": "user", "content": "q"]]]
        _ = messagesUsage(provider, body)
        let usage = messagesUsage(provider, body)
        #expect(count(usage, "input_tokens") == 1_500 + 1 + 6)
        #expect(count(usage, "cache_read_input_tokens") == 0)
        #expect(count(usage, "cache_creation_input_tokens") == 0)
    }

    @Test func breakpointUnder1024TokensIgnored() {
        let provider = SimulatedProvider()
        let body: [String: Any] = ["system": system(filler(2_000)), "messages": [["role": "user", "content": "q"]]]
        _ = messagesUsage(provider, body)
        let usage = messagesUsage(provider, body)
        #expect(count(usage, "input_tokens") == 500 + 1 + 6)
        #expect(count(usage, "cache_creation_input_tokens") == 0)
        #expect(count(usage, "cache_read_input_tokens") == 0)
    }

    @Test func movedBreakpointReadsEarlierTurn() {
        let provider = SimulatedProvider()
        func turn(_ text: String, marked: Bool) -> [String: Any] {
            var block: [String: Any] = ["type": "text", "text": text]
            if marked { block["cache_control"] = ephemeral }
            return ["role": "user", "content": [block]]
        }
        let opening = filler(6_000)
        let first = messagesUsage(provider, ["messages": [turn(opening, marked: true)]])
        #expect(count(first, "cache_creation_input_tokens") == 1_503)
        // The next request moves the breakpoint to its new last turn, so the old one is a block boundary before it.
        let next: [String: Any] = ["messages": [turn(opening, marked: false), ["role": "assistant", "content": filler(400)], turn(filler(400), marked: true)]]
        let second = messagesUsage(provider, next)
        #expect(count(second, "cache_read_input_tokens") == 1_503)
        #expect(count(second, "cache_creation_input_tokens") == 2 * (3 + 100))
        #expect(count(second, "input_tokens") == 3)
    }

    @Test func oneHourWritesReportedApart() {
        let provider = SimulatedProvider()
        let body: [String: Any] = [
            "system": system(filler(6_000), ttl: "1h"),
            "messages": [["role": "user", "content": [["type": "text", "text": filler(4_000), "cache_control": ephemeral]]]],
        ]
        let usage = messagesUsage(provider, body)
        let creation = usage["cache_creation"] as? [String: Any] ?? [:]
        #expect(creation["ephemeral_1h_input_tokens"] as? Int == 1_500)
        #expect(creation["ephemeral_5m_input_tokens"] as? Int == 3 + 1_000)
        #expect(count(usage, "cache_creation_input_tokens") == 2_503)
        #expect(count(usage, "input_tokens") == 3)
    }

    @Test func topLevelCacheControlMarksLastBlock() {
        let provider = SimulatedProvider()
        let body: [String: Any] = ["cache_control": ephemeral, "messages": [["role": "user", "content": filler(6_000)]]]
        let first = messagesUsage(provider, body)
        let second = messagesUsage(provider, body)
        #expect(count(first, "cache_creation_input_tokens") == 1_503)
        #expect(count(second, "cache_read_input_tokens") == 1_503)
        #expect(count(second, "input_tokens") == 3)
    }

    @Test func streamStartCarriesInputSide() {
        let provider = SimulatedProvider()
        let body: [String: Any] = ["model": "claude-sonnet-4-5", "max_tokens": 5, "stream": true,
                                   "system": system(filler(6_000)), "messages": [["role": "user", "content": "q"]]]
        _ = post(provider, "/v1/messages", body)
        let events = post(provider, "/v1/messages", body).components(separatedBy: "\n\n")
        let start = events.first { $0.hasPrefix("event: message_start") } ?? ""
        let message = object(String(start.split(separator: "\n").last?.dropFirst("data: ".count) ?? ""))["message"] as? [String: Any]
        let usage = message?["usage"] as? [String: Any] ?? [:]
        #expect(count(usage, "cache_read_input_tokens") == 1_500)
        #expect(count(usage, "input_tokens") == 7)
        let delta = events.first { $0.hasPrefix("event: message_delta") } ?? ""
        let deltaUsage = object(String(delta.split(separator: "\n").last?.dropFirst("data: ".count) ?? ""))["usage"] as? [String: Any]
        #expect(deltaUsage?["output_tokens"] as? Int == 5)
    }
}

@Suite struct PrefixTableTests {
    @Test func evictsLeastRecentlyUsed() {
        var table = PrefixTable(capacity: 4)
        for hash in UInt64(1)...4 { table.store(hash) }
        let firstFound = table.lookUp(1)
        table.store(5)
        // Over capacity, the table drops to three quarters of it: 2 and 3, the least
        // recently used, go, and 1 stays because it was just looked up.
        let found = (1...5).map { table.lookUp(UInt64($0)) }
        #expect(firstFound)
        #expect(table.count == 3)
        #expect(found == [true, false, false, true, true])
    }

    @Test func countNeverExceedsCapacity() {
        var table = PrefixTable(capacity: 100)
        for hash in UInt64(0)..<10_000 { table.store(hash) }
        let newestFound = table.lookUp(9_999)
        #expect(table.count <= 100)
        #expect(newestFound)
    }
}
