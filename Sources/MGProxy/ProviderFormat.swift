import Foundation
import MGGovernor

public enum Provider: String, Sendable, CaseIterable {
    /// Returns the provider whose API serves a model, by its name: `claude-*` is Anthropic's, the rest OpenAI's.
    /// A fallback never moves a call across APIs, because the request body would not fit the other one.
    public static func serving(model: String) -> Provider {
        model.hasPrefix("claude") ? .anthropic : .openai
    }

    /// Returns whether a fallback from a call at `endpoint` may move it to `model`: the same provider's API,
    /// and an embedding model only for embeddings, by its name.
    static func canServe(_ endpoint: Endpoint, model: String) -> Bool {
        serving(model: model) == endpoint.provider && model.contains("embedding") == (endpoint == .embeddings)
    }

    case openai, anthropic
}

/// The LLM endpoints mg-run meters.
enum Endpoint: Sendable {
    case chatCompletions, messages, embeddings, responses

    var provider: Provider { self == .messages ? .anthropic : .openai }
    var kindAction: String { self == .embeddings ? "llm:embedding" : "llm:completion" }
    /// The path below the provider's base URL.
    var upstreamPath: String {
        switch self {
        case .chatCompletions: return "/chat/completions"
        case .responses: return "/responses"
        case .messages: return "/v1/messages"
        case .embeddings: return "/embeddings"
        }
    }
}

/// A client request that cannot be metered as sent.
struct ClientError: Error {
    var status: Int
    var message: String
}

/// One LLM request, read far enough to bound its cost and to rewrite it.
struct ParsedCall {
    var endpoint: Endpoint
    /// The bytes to forward: the client's, or Foundation's normalised copy when
    /// the client repeated or escaped a top-level key.
    var body: [UInt8]
    var model: String
    /// `llm:<model>`, built once because every audit line and decision uses it.
    var modelAction: String
    var stream: Bool
    /// OpenAI streams only: whether the client itself asked for the usage chunk.
    var clientWantsUsage: Bool
    /// The output cap fields the client set, and the largest of their values,
    /// because an upstream may read either when both are present.
    var outputFields: [String] = []
    var requestedOutput: Int?
    var choices: Int
    var inputTokensBound: Int
    var inputTokensEstimate: Int
    /// The model a fallback moved the call to, written over the client's `model` upstream.
    private(set) var modelOverride: String?
    /// The byte ranges of the top-level member values in `body`, for splicing edits in.
    private var members: [String: Range<Int>]
    private var includeUsageValue: Range<Int>?

    /// Extra tokens a non-text part (an image, audio, a document) is assumed to
    /// cost on top of its bytes in the request.
    /// NOTE: an estimate; providers bill large images at up to a few thousand tokens.
    static let tokensPerMediaPart = 3_000

    init(endpoint: Endpoint, body original: [UInt8]) throws(ClientError) {
        let notAnObject = ClientError(status: 400, message: "the request body is not a JSON object")
        var body = original
        var document = JSONDocument(body)
        guard var scanned = document.topLevelMembers() else { throw notAnObject }
        if scanned.irregularKeys {
            // Foundation settles repeated keys (the last wins) and escapes; the copy is metered and forwarded.
            guard let object = try? JSONSerialization.jsonObject(with: Data(original)),
                  let data = try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes]),
                  case let copy = JSONDocument(Array(data)), let normalized = copy.topLevelMembers()
            else { throw notAnObject }
            body = copy.bytes
            document = copy
            scanned = normalized
        }
        let members = scanned.members
        guard let modelRange = members["model"], let model = document.string(modelRange), !model.isEmpty else {
            throw ClientError(status: 400, message: "the request has no \"model\" string")
        }
        if let stored = ParsedCall.storedInputReference(in: body) {
            throw ClientError(status: 403, message: "the request refers to \(stored), input stored by the provider that mg-run cannot see or bound; send the content in the request instead")
        }
        // Input stored upstream is billed but not in the request, so mg-run could not bound the call's cost.
        if endpoint == .responses {
            for field in ["previous_response_id", "conversation", "prompt"] {
                if let range = members[field], !document.isLiteral(range, "null") {
                    throw ClientError(status: 403, message: "the request uses \"\(field)\", which adds input stored by the provider that mg-run cannot see or bound; send the whole conversation in \"input\" instead")
                }
            }
        }
        self.endpoint = endpoint
        self.body = body
        self.members = members
        self.model = model
        self.modelAction = "llm:\(model)"
        self.stream = endpoint != .embeddings && (members["stream"].map { document.isLiteral($0, "true") } ?? false)

        var includeUsage: Range<Int>?
        if let options = members["stream_options"], document.bytes[options.lowerBound] == UInt8(ascii: "{") {
            document.forEachMember(ofObjectAt: options.lowerBound) { key, value in
                if document.bytes[key].elementsEqual("include_usage".utf8) { includeUsage = value }
            }
        }
        self.includeUsageValue = includeUsage
        self.clientWantsUsage = includeUsage.map { document.isLiteral($0, "true") } ?? false

        var choices: Int? = 1
        if let range = members["n"], !document.isLiteral(range, "null") { choices = document.integer(range) }
        guard let choices, (1...128).contains(choices) else {
            throw ClientError(status: 400, message: "\"n\" must be an integer from 1 to 128")
        }
        self.choices = choices

        var messageCount = 0
        var mediaParts = 0
        switch endpoint {
        case .chatCompletions, .messages:
            guard let messages = members["messages"], document.bytes[messages.lowerBound] == UInt8(ascii: "[") else {
                throw ClientError(status: 400, message: "the request has no \"messages\" list")
            }
            document.forEachElement(ofArrayAt: messages.lowerBound) { message in
                messageCount += 1
                guard document.bytes[message.lowerBound] == UInt8(ascii: "{") else { return }
                document.forEachMember(ofObjectAt: message.lowerBound) { key, value in
                    if document.bytes[key].elementsEqual("content".utf8) {
                        mediaParts += ParsedCall.countMediaParts(value, in: document)
                    }
                }
            }
            for field in (endpoint.provider == .openai ? ["max_completion_tokens", "max_tokens"] : ["max_tokens"]) {
                // null means "no cap", as the providers read it.
                guard let range = members[field], !document.isLiteral(range, "null") else { continue }
                guard let cap = document.integer(range), cap >= 0 else {
                    throw ClientError(status: 400, message: "\"\(field)\" must be a non-negative integer")
                }
                outputFields.append(field)
                requestedOutput = max(requestedOutput ?? 0, cap)
            }
        case .embeddings:
            guard members["input"] != nil else {
                throw ClientError(status: 400, message: "the request has no \"input\"")
            }
        case .responses:
            // input is a string or a list of items; each item counts like a chat message.
            guard let input = members["input"] else {
                throw ClientError(status: 400, message: "the request has no \"input\"")
            }
            if document.bytes[input.lowerBound] == UInt8(ascii: "[") {
                document.forEachElement(ofArrayAt: input.lowerBound) { _ in messageCount += 1 }
                mediaParts = ParsedCall.countMediaParts(input, in: document)
            } else {
                messageCount = 1
            }
            if let range = members["max_output_tokens"], !document.isLiteral(range, "null") {
                guard let cap = document.integer(range), cap >= 0 else {
                    throw ClientError(status: 400, message: "\"max_output_tokens\" must be a non-negative integer")
                }
                outputFields = ["max_output_tokens"]
                requestedOutput = cap
            }
        }
        // Every token is at least one byte of UTF-8, so the body's bytes bound the
        // text it carries. Chat framing adds a few tokens per message.
        self.inputTokensBound = body.count + 8 * messageCount + 32 + ParsedCall.tokensPerMediaPart * mediaParts
        self.inputTokensEstimate = body.count / 4 + 4 * messageCount + 3 + ParsedCall.tokensPerMediaPart * mediaParts
    }

    /// Returns a description of the first part that refers to input stored by the provider (a file by id,
    /// an Anthropic file source, a Responses item reference), or nil. Foundation parses the body only when
    /// a cheap byte search finds a hint, or an escape that could hide one.
    static func storedInputReference(in body: [UInt8]) -> String? {
        guard contains(body, "file_id") || contains(body, "item_reference") || contains(body, "\"file\"") || contains(body, "\\u"),
              let object = try? JSONSerialization.jsonObject(with: Data(body)) else { return nil }
        func search(_ value: Any, depth: Int) -> String? {
            guard depth < 64 else { return nil }
            if let dictionary = value as? [String: Any] {
                if dictionary["file_id"] != nil { return "a file by \"file_id\"" }
                if dictionary["type"] as? String == "item_reference" { return "a stored item (\"item_reference\")" }
                if let source = dictionary["source"] as? [String: Any], source["type"] as? String == "file" {
                    return "a file source (\"source\": {\"type\": \"file\"})"
                }
                for nested in dictionary.values {
                    if let found = search(nested, depth: depth + 1) { return found }
                }
            } else if let array = value as? [Any] {
                for nested in array {
                    if let found = search(nested, depth: depth + 1) { return found }
                }
            }
            return nil
        }
        return search(object, depth: 0)
    }

    /// Moves the call to another model of the same provider, for a fallback.
    mutating func rewriteModel(to newModel: String) {
        model = newModel
        modelAction = "llm:\(newModel)"
        modelOverride = newModel
    }

    /// The names the call is governed under: `llm:<model>` first, then its kind.
    var actions: [String] { [modelAction, endpoint.kindAction] }

    /// Part and item types that carry text (or tool traffic) rather than media.
    static let textPartTypes: Set = ["text", "input_text", "output_text", "tool_result", "tool_use", "thinking",
                                     "message", "function_call", "function_call_output", "reasoning"]

    /// Counts non-text parts at any depth, such as images inside an Anthropic tool_result.
    static func countMediaParts(_ range: Range<Int>, in document: JSONDocument) -> Int {
        var count = 0
        switch document.bytes[range.lowerBound] {
        case UInt8(ascii: "{"):
            document.forEachMember(ofObjectAt: range.lowerBound) { key, value in
                if document.bytes[key].elementsEqual("type".utf8), let type = document.string(value), !textPartTypes.contains(type) {
                    count += 1
                }
                count += countMediaParts(value, in: document)
            }
        case UInt8(ascii: "["):
            document.forEachElement(ofArrayAt: range.lowerBound) { count += countMediaParts($0, in: document) }
        default:
            break
        }
        return count
    }

    /// Whether the upstream must be asked for a usage chunk the client did not ask for.
    var injectsUsage: Bool { endpoint == .chatCompletions && stream && !clientWantsUsage }

    /// Returns the body to send upstream: the client's, with the output cap set to
    /// what the governor reserved and, for OpenAI streams, the usage chunk requested.
    /// Edits are spliced into the bytes, so everything else goes upstream as the client wrote it.
    func upstreamBody(admission: Admission) -> [UInt8] {
        var edits: [(range: Range<Int>, text: String)] = []
        // The top-level object always has "model", so a member inserted after its "{" takes a comma.
        let topInsertion = JSONDocument(body).skipSpace(0) + 1
        if let modelOverride, let range = members["model"] {
            edits.append((range, quoted(modelOverride)))
        }
        if admission.rewritesOutputCap, let cap = admission.outputTokens {
            // Every cap field the client set gets the reserved value, whichever one the upstream reads.
            for field in outputFields.isEmpty ? [defaultOutputField] : outputFields {
                if let range = members[field] {
                    edits.append((range, String(cap)))
                } else {
                    edits.append((topInsertion..<topInsertion, "\"\(field)\":\(cap),"))
                }
            }
        }
        if injectsUsage {
            if let value = includeUsageValue {
                edits.append((value, "true"))
            } else if let options = members["stream_options"], body[options.lowerBound] == UInt8(ascii: "{") {
                let inside = options.lowerBound + 1
                let empty = body[JSONDocument(body).skipSpace(inside)] == UInt8(ascii: "}")
                edits.append((inside..<inside, empty ? "\"include_usage\":true" : "\"include_usage\":true,"))
            } else if let options = members["stream_options"] {
                edits.append((options, "{\"include_usage\":true}"))
            } else {
                edits.append((topInsertion..<topInsertion, "\"stream_options\":{\"include_usage\":true},"))
            }
        }
        guard !edits.isEmpty else { return body }
        var result = body
        for edit in edits.sorted(by: { $0.range.lowerBound > $1.range.lowerBound }) {
            result.replaceSubrange(edit.range, with: Array(edit.text.utf8))
        }
        return result
    }

    /// Reasoning models take only `max_completion_tokens`; others are sent the older, widely accepted `max_tokens`.
    private var defaultOutputField: String {
        if endpoint == .responses { return "max_output_tokens" }
        guard endpoint == .chatCompletions else { return "max_tokens" }
        let reasoning = ["o1", "o3", "o4", "gpt-5"].contains { model == $0 || model.hasPrefix($0 + "-") }
        return reasoning ? "max_completion_tokens" : "max_tokens"
    }
}

enum UsageParser {
    /// Usage from a complete (non-streamed) response body, or nil when it has none.
    static func usage(endpoint: Endpoint, body: [UInt8]) -> Usage? {
        // A byte scan, not JSONSerialization: this runs on every call, and the
        // Foundation parser's fixed cost per document showed up in profiles.
        guard let value = JSONScan.topLevelValue("usage", in: body), value.first == UInt8(ascii: "{") else { return nil }
        let counts = JSONScan.integerMembers(in: Array(value), nested: ["prompt_tokens_details", "input_tokens_details", "cache_creation"])
        switch endpoint {
        case .messages: return anthropic(counts)
        case .responses: return responses(counts)
        case .chatCompletions, .embeddings: return openAI(counts)
        }
    }

    /// The Responses API names usage differently from Chat Completions; cached tokens are inside `input_tokens`.
    /// NOTE: cache writes are taken as part of input_tokens too, priced at the cache-write rate; not checked against OpenAI's docs.
    static func responses(_ usage: [String: Int]) -> Usage? {
        guard let reportedInput = usage["input_tokens"] else { return nil }
        let input = max(0, reportedInput)
        let cached = min(max(0, usage["input_tokens_details.cached_tokens"] ?? 0), input)
        let written = min(max(0, usage["input_tokens_details.cache_write_tokens"] ?? 0), input - cached)
        return Usage(uncachedInputTokens: input - cached - written, cacheReadTokens: cached, cacheWriteTokens: written,
                     outputTokens: max(0, usage["output_tokens"] ?? 0))
    }

    /// Returns the whole-number usage fields of a decoded usage object, in the form `integerMembers` returns.
    static func counts(of usage: [String: Any]) -> [String: Int] {
        var counts = usage.compactMapValues { $0 as? Int }
        for nested in ["prompt_tokens_details", "input_tokens_details", "cache_creation"] {
            for (key, value) in usage[nested] as? [String: Any] ?? [:] {
                if let count = value as? Int { counts["\(nested).\(key)"] = count }
            }
        }
        return counts
    }

    /// OpenAI counts cached tokens inside `prompt_tokens`.
    static func openAI(_ usage: [String: Int]) -> Usage? {
        guard let reportedPrompt = usage["prompt_tokens"] else { return nil }
        // A faulty upstream's negative counts must not credit the budget.
        let prompt = max(0, reportedPrompt)
        let completion = max(0, usage["completion_tokens"] ?? 0)
        let cached = usage["prompt_tokens_details.cached_tokens"] ?? 0
        let cachedPart = min(max(0, cached), prompt)
        return Usage(uncachedInputTokens: prompt - cachedPart, cacheReadTokens: cachedPart, outputTokens: completion)
    }

    /// Anthropic reports cache reads and writes beside `input_tokens`, not inside it.
    static func anthropic(_ usage: [String: Int]) -> Usage? {
        guard usage["input_tokens"] != nil || usage["output_tokens"] != nil else { return nil }
        func count(_ key: String) -> Int { max(0, usage[key] ?? 0) }
        // cache_creation splits the writes by lifetime; 1-hour writes cost more.
        let written = count("cache_creation_input_tokens")
        let oneHour = min(count("cache_creation.ephemeral_1h_input_tokens"), written)
        var result = Usage(
            uncachedInputTokens: count("input_tokens"),
            cacheReadTokens: count("cache_read_input_tokens"),
            cacheWriteTokens: written - oneHour,
            outputTokens: count("output_tokens"))
        result.cacheWrite1hTokens = oneHour
        return result
    }
}

/// Error bodies in each provider's own shape, because SDKs parse them to pick an exception.
enum ErrorBody {
    static func response(_ provider: Provider, status: Int, type: String, code: String?, message: String, headers: [(String, String)] = []) -> HTTPResponse {
        switch provider {
        case .openai:
            var error: [String: Any] = ["message": message, "type": type, "param": NSNull()]
            error["code"] = code ?? NSNull()
            return .json(status, ["error": error], headers: headers)
        case .anthropic:
            return .json(status, ["type": "error", "error": ["type": anthropicType(status: status, fallback: type), "message": message]], headers: headers)
        }
    }

    static func anthropicType(status: Int, fallback: String) -> String {
        switch status {
        case 400: return "invalid_request_error"
        case 401: return "authentication_error"
        case 403: return "permission_error"
        case 404: return "not_found_error"
        case 413: return "request_too_large"
        case 429: return "rate_limit_error"
        case 529: return "overloaded_error"
        case 500...599: return "api_error"
        default: return fallback
        }
    }

    static func refusal(_ refusal: Refusal, provider: Provider) -> HTTPResponse {
        switch refusal.kind {
        case .window(let seconds):
            let retryAfter = [("Retry-After", String(Int(seconds.rounded(.up)))),
                              ("retry-after-ms", String(Int((seconds * 1000).rounded(.up))))]
            return response(provider, status: 429, type: "requests", code: "rate_limit_exceeded", message: refusal.message, headers: retryAfter)
        case .quota:
            return response(provider, status: 429, type: "insufficient_quota", code: "insufficient_quota", message: refusal.message,
                            headers: [("x-should-retry", "false")])
        case .forbidden, .conclude:
            // A conclusion is sent as a completion, so only a call that cannot carry one gets here.
            return response(provider, status: 403, type: "permission_error", code: "policy_denied", message: refusal.message,
                            headers: [("x-should-retry", "false")])
        }
    }
}
