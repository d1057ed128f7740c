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
///
/// Prompt caching is emulated per simulator instance, with no expiry (only
/// least-recently-used eviction), and reported the way each provider does:
///
/// - OpenAI (chat completions and Responses): once a prompt has 1024 tokens,
///   `cached_tokens` is the longest prefix seen before in an earlier request
///   to the same endpoint and model, in whole 128-token blocks from 1024 up.
///   It is part of `prompt_tokens` / `input_tokens`.
/// - Anthropic: a block carrying `cache_control` (or a top-level
///   `cache_control`, which marks the last block) is a breakpoint. The prefix
///   up to the last breakpoint is written on first sight and read afterwards.
///   A breakpoint also reads a prefix that an earlier request cached at one of
///   the 20 block boundaries before it. `input_tokens` counts only the tokens
///   after the last breakpoint, and the cache reads and writes are reported
///   beside it.
public final class SimulatedProvider: HTTPHandler {
    /// Delay before each response starts.
    public let latencyMilliseconds: Int
    /// Delay before each streamed event after the first, so tests can cut a stream in the middle.
    public let eventDelayMilliseconds: Int
    private let requestCounts = Locked<[String: Int]>([:])
    private let prefixes: Locked<PrefixTable>

    /// The number of prompt prefix hashes a simulator keeps by default, enough for at
    /// least 32 MiB of distinct OpenAI prompt prefixes in an estimated 2 to 4 MiB of memory.
    public static let defaultPromptCacheCapacity = 65_536

    /// `promptCacheCapacity` is the number of prefix hashes kept. Each one is a
    /// 128-token block of an OpenAI prompt or one Anthropic breakpoint.
    public init(latencyMilliseconds: Int = 0, eventDelayMilliseconds: Int = 0,
                promptCacheCapacity: Int = SimulatedProvider.defaultPromptCacheCapacity) {
        self.latencyMilliseconds = latencyMilliseconds
        self.eventDelayMilliseconds = eventDelayMilliseconds
        self.prefixes = Locked(PrefixTable(capacity: promptCacheCapacity))
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
        var prompt: SimulatedPrompt
        var inputTokens: Int
        var outputTokens: Int
        var truncated: Bool
        var words: [String]
    }

    static func reply(to json: [String: Any], capField: [String]) -> Reply {
        let prompt = SimulatedPrompt(json)
        let bytes = prompt.textBytes
        let natural = 200 + bytes % 300
        let cap = capField.lazy.compactMap { json[$0] as? Int }.first ?? natural
        let outputTokens = min(natural, max(0, cap))
        var words: [String] = []
        words.reserveCapacity(outputTokens)
        for index in 0..<outputTokens {
            words.append(vocabulary[(index * 7 + bytes) % vocabulary.count])
        }
        return Reply(prompt: prompt, inputTokens: prompt.tokenCount, outputTokens: outputTokens, truncated: outputTokens < natural, words: words)
    }

    // MARK: - OpenAI

    private func chat(_ json: [String: Any]) -> HTTPResponse {
        let model = json["model"] as? String ?? "gpt-4o"
        let reply = SimulatedProvider.reply(to: json, capField: ["max_completion_tokens", "max_tokens"])
        let cached = openAICachedTokens(reply.prompt, namespace: "chat.completions \(model)")
        let usage: [String: Any] = [
            "prompt_tokens": reply.inputTokens, "completion_tokens": reply.outputTokens, "total_tokens": reply.inputTokens + reply.outputTokens,
            "prompt_tokens_details": ["cached_tokens": cached], "completion_tokens_details": ["reasoning_tokens": 0],
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
        let cached = openAICachedTokens(reply.prompt, namespace: "responses \(model)")
        let id = "resp_sim\(reply.inputTokens)"
        let text = reply.words.joined(separator: " ")
        let usage: [String: Any] = [
            "input_tokens": reply.inputTokens, "input_tokens_details": ["cached_tokens": cached, "cache_write_tokens": 0],
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
        let cache = anthropicCacheUsage(reply.prompt, namespace: "messages \(model)")
        func usage(outputTokens: Int) -> [String: Any] {
            ["input_tokens": cache.uncachedTokens, "output_tokens": outputTokens,
             "cache_creation_input_tokens": cache.writeTokens, "cache_read_input_tokens": cache.readTokens,
             "cache_creation": ["ephemeral_5m_input_tokens": cache.fiveMinuteWriteTokens, "ephemeral_1h_input_tokens": cache.oneHourWriteTokens]]
        }
        let id = "msg_sim\(reply.inputTokens)"
        let stopReason = reply.truncated ? "max_tokens" : "end_turn"
        guard json["stream"] as? Bool == true else {
            return .json(200, [
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [["type": "text", "text": reply.words.joined(separator: " ")]],
                "stop_reason": stopReason, "stop_sequence": NSNull(),
                "usage": usage(outputTokens: reply.outputTokens),
            ])
        }
        func event(_ name: String, _ object: [String: Any]) -> String { "event: \(name)\ndata: \(Conclusion.encode(object))\n\n" }
        // The input side of the usage is in message_start. Then message_delta carries the cumulative output.
        var events = [
            event("message_start", ["type": "message_start", "message": [
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [Any](), "stop_reason": NSNull(), "stop_sequence": NSNull(),
                "usage": usage(outputTokens: 1)]]),
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

// MARK: - Prompt caching

extension SimulatedProvider {
    /// The shortest prompt and the shortest prefix OpenAI caches, in tokens.
    static let openAIMinimumCachedTokens = 1024
    /// OpenAI reports cache hits in blocks of this many tokens.
    static let openAICacheBlockTokens = 128
    /// The shortest prefix the simulator caches at an Anthropic breakpoint, in tokens.
    /// NOTE: Anthropic's minimum depends on the model, from 1024 to 4096 tokens as
    /// third-party provider docs list it. The simulator uses 1024 for every model.
    static let anthropicMinimumCachedTokens = 1024
    /// How many block boundaries before a breakpoint Anthropic checks for an earlier
    /// cache entry: about 20, as third-party docs describe it.
    static let anthropicLookbackBlocks = 20

    /// Returns OpenAI's `cached_tokens` for the prompt: the longest prefix that an
    /// earlier request in the namespace also had, in whole 128-token blocks from
    /// 1024 tokens up, or 0 for a prompt under 1024 tokens. Stores the prompt's
    /// own blocks for later requests.
    func openAICachedTokens(_ prompt: SimulatedPrompt, namespace: String) -> Int {
        let minimum = SimulatedProvider.openAIMinimumCachedTokens
        guard prompt.tokenCount >= minimum else { return 0 }
        // Token i covers bytes 4i..<4i+4, so a block boundary of k tokens is byte offset 4k.
        let offsets = Array(stride(from: 4 * minimum, through: prompt.bytes.count, by: 4 * SimulatedProvider.openAICacheBlockTokens))
        let hashes = prompt.prefixHashes(at: offsets, namespace: namespace)
        let longestSeen = prefixes.withLock { table -> Int? in
            let seen = hashes.map { table.lookUp($0) }
            hashes.forEach { table.store($0) }
            return seen.lastIndex(of: true)
        }
        return longestSeen.map { prompt.tokens(upTo: offsets[$0]) } ?? 0
    }

    /// Input usage of an Anthropic request, split the way Anthropic bills it.
    struct AnthropicCacheUsage: Equatable {
        /// Tokens after the last breakpoint, reported as `input_tokens`.
        var uncachedTokens: Int
        var readTokens = 0
        var fiveMinuteWriteTokens = 0
        var oneHourWriteTokens = 0
        var writeTokens: Int { fiveMinuteWriteTokens + oneHourWriteTokens }
    }

    /// Returns how an Anthropic request's input splits into cache reads, cache
    /// writes and uncached tokens, and stores the prefixes it writes.
    ///
    /// The read is the longest prefix cached by an earlier request that ends at a
    /// breakpoint or at one of the 20 block boundaries before a breakpoint. Every
    /// breakpoint after the read is written, and the tokens between it and the
    /// previous breakpoint (or the read) count under its TTL. Breakpoints under
    /// 1024 tokens cache nothing, as Anthropic ignores them.
    func anthropicCacheUsage(_ prompt: SimulatedPrompt, namespace: String) -> AnthropicCacheUsage {
        let minimum = SimulatedProvider.anthropicMinimumCachedTokens
        let breakpoints = prompt.breakpoints.filter { prompt.tokens(upTo: $0.offset) >= minimum }
        guard let last = breakpoints.last else { return AnthropicCacheUsage(uncachedTokens: prompt.tokenCount) }

        var readCandidates = Set<Int>()
        for breakpoint in breakpoints {
            readCandidates.insert(breakpoint.offset)
            let earlier = prompt.blockEnds.filter { $0 < breakpoint.offset && prompt.tokens(upTo: $0) >= minimum }
            readCandidates.formUnion(Set(earlier).sorted().suffix(SimulatedProvider.anthropicLookbackBlocks))
        }
        // Every breakpoint is a read candidate, so the candidates cover the offsets to write too.
        let offsets = readCandidates.sorted()
        let hashes = Dictionary(uniqueKeysWithValues: zip(offsets, prompt.prefixHashes(at: offsets, namespace: namespace)))

        var usage = AnthropicCacheUsage(uncachedTokens: prompt.tokenCount - prompt.tokens(upTo: last.offset))
        prefixes.withLock { table in
            // Look up from the longest candidate down, so the first hit is the read.
            let readOffset = readCandidates.sorted(by: >).first { table.lookUp(hashes[$0]!) } ?? 0
            usage.readTokens = prompt.tokens(upTo: readOffset)
            var segmentStart = readOffset
            for breakpoint in breakpoints where breakpoint.offset > readOffset {
                table.store(hashes[breakpoint.offset]!)
                let written = prompt.tokens(upTo: breakpoint.offset) - prompt.tokens(upTo: segmentStart)
                if breakpoint.oneHour {
                    usage.oneHourWriteTokens += written
                } else {
                    usage.fiveMinuteWriteTokens += written
                }
                segmentStart = breakpoint.offset
            }
        }
        return usage
    }
}

/// A request's prompt as one byte string whose simulated token count is
/// ceil(bytes / 4): the system prompt and instructions, then for each message a
/// 12-byte frame (3 tokens) and its text, then a 12-byte reply primer (3 tokens).
/// Because the frames are whole tokens, the count equals the usage rule's
/// ceil(B / 4) + 3 per message + 3, and token i covers bytes 4i..<4i+4, so a
/// prefix of the string is a prefix of the prompt in tokens.
struct SimulatedPrompt {
    /// An Anthropic cache breakpoint: the byte offset just after the marked block.
    struct Breakpoint: Equatable {
        var offset: Int
        /// True for `"ttl": "1h"`, false for the 5-minute default.
        var oneHour: Bool
    }

    private(set) var bytes: [UInt8] = []
    /// UTF-8 bytes of text only (B in the usage rule), without frames.
    private(set) var textBytes = 0
    private(set) var messageCount = 0
    /// Byte offsets at which a content block or a message ends, in the order they occur.
    private(set) var blockEnds: [Int] = []
    /// Anthropic cache breakpoints, by ascending offset.
    private(set) var breakpoints: [Breakpoint] = []

    static let frameBytes = 12

    init(_ json: [String: Any]) {
        // Chat and Messages send "messages" (and "system"); the Responses API sends "input" (and "instructions").
        var messages = json["messages"] as? [Any] ?? []
        if let input = json["input"] as? String {
            messages = [["content": input]]
        } else if let items = json["input"] as? [Any] {
            messages = items
        }
        appendContent(json["system"])
        appendContent(json["instructions"])
        for message in messages {
            let fields = message as? [String: Any] ?? [:]
            appendFrame(0, label: fields["role"] as? String ?? fields["type"] as? String ?? "")
            appendContent(fields["content"])
            blockEnds.append(bytes.count)
        }
        messageCount = messages.count
        // A top-level cache_control marks the last block of the request.
        if let breakpoint = SimulatedPrompt.breakpoint(json, at: bytes.count) {
            breakpoints.append(breakpoint)
        }
        appendFrame(1, label: "assistant")
    }

    var tokenCount: Int { tokens(upTo: bytes.count) }

    /// Counts the simulated tokens in the first `offset` bytes, a partial last token included.
    func tokens(upTo offset: Int) -> Int { (offset + 3) / 4 }

    /// Returns a 64-bit FNV-1a hash of the namespace followed by each prefix of the
    /// prompt that ends at one of `offsets`, which must be ascending.
    func prefixHashes(at offsets: [Int], namespace: String) -> [UInt64] {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ byte: UInt8) {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        namespace.utf8.forEach(mix)
        mix(0)
        var hashes: [UInt64] = []
        hashes.reserveCapacity(offsets.count)
        var position = 0
        for offset in offsets {
            while position < offset {
                mix(bytes[position])
                position += 1
            }
            hashes.append(hash)
        }
        return hashes
    }

    /// Appends a frame of exactly 12 bytes: a kind byte, then the label, cut or padded with zeros.
    private mutating func appendFrame(_ kind: UInt8, label: String) {
        var frame = [kind] + Array(label.utf8.prefix(SimulatedPrompt.frameBytes - 1))
        frame += [UInt8](repeating: 0, count: SimulatedPrompt.frameBytes - frame.count)
        bytes += frame
    }

    /// Appends the text of a content value: a string, or a list of blocks whose
    /// "text" and nested "content" count, as in the usage rule.
    private mutating func appendContent(_ content: Any?) {
        if let text = content as? String {
            bytes += text.utf8
            textBytes += text.utf8.count
            return
        }
        guard let parts = content as? [Any] else { return }
        for case let part as [String: Any] in parts {
            if let text = part["text"] as? String {
                bytes += text.utf8
                textBytes += text.utf8.count
            }
            if let nested = part["content"] { appendContent(nested) }
            blockEnds.append(bytes.count)
            if let breakpoint = SimulatedPrompt.breakpoint(part, at: bytes.count) {
                breakpoints.append(breakpoint)
            }
        }
    }

    /// Returns the breakpoint that an object's `cache_control: {"type": "ephemeral"}` sets, if it has one.
    private static func breakpoint(_ object: [String: Any], at offset: Int) -> Breakpoint? {
        guard let control = object["cache_control"] as? [String: Any], control["type"] as? String == "ephemeral" else { return nil }
        return Breakpoint(offset: offset, oneHour: control["ttl"] as? String == "1h")
    }
}

/// Hashes of prompt prefixes a simulator has seen. When it contains more than
/// `capacity` hashes, the least recently used quarter is evicted in one pass,
/// which costs O(n log n) once per capacity / 4 stores.
struct PrefixTable {
    let capacity: Int
    private var lastUse: [UInt64: UInt64] = [:]
    private var clock: UInt64 = 0

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    var count: Int { lastUse.count }

    /// Reports whether the hash is stored, and marks it used when it is.
    mutating func lookUp(_ hash: UInt64) -> Bool {
        guard lastUse[hash] != nil else { return false }
        clock += 1
        lastUse[hash] = clock
        return true
    }

    mutating func store(_ hash: UInt64) {
        clock += 1
        lastUse[hash] = clock
        guard lastUse.count > capacity else { return }
        let keep = max(1, capacity * 3 / 4)
        let oldest = lastUse.sorted { $0.value < $1.value }.prefix(lastUse.count - keep)
        for (evicted, _) in oldest { lastUse[evicted] = nil }
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
