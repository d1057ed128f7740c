import MGPolicy

/// The facts about one call that the governor decides on before it is forwarded.
public struct CallDescriptor: Sendable {
    /// Every name the call is governed under, such as `llm:gpt-4o` and `llm:completion`.
    public var actions: [String]
    public var model: String
    public var price: ModelPrice
    /// An upper bound of the input tokens the provider can bill, for cost reservations.
    public var inputTokensBound: Int
    /// A best guess of the input tokens, for per-call token caps.
    public var inputTokensEstimate: Int
    /// The client's own output cap (`max_tokens` and its variants), if it sent one.
    public var requestedOutputTokens: Int?
    /// Whether the call produces output tokens at all (false for embeddings).
    public var producesOutput: Bool
    /// Completions requested (`n`); each is billed for its output.
    public var choices: Int
    /// A hash of the request body, so a request repeated after an error is recognised as a retry.
    public var fingerprint: UInt64 = 0
    /// For `delegate:spawn`: the nesting depth of the sub-agent asking to start (1 for a child of the top run).
    public var depth: Int?
    /// The topic fingerprint for max_iterations_per_topic: the `X-MG-Topic` header or the normalized search query.
    public var topic: String?
    /// The host and path of an egress request, for `request.domain` and `request.path` in conditions.
    public var domain: String?
    public var path: String?
    /// For `code:execute`: the program's language, sandbox profile and path, for `code.*` in conditions.
    public var code: CodeFacts?
    /// Whether the request may write a prompt cache (an Anthropic `cache_control`), which bills input above its base price.
    public var mayWriteCache = false
    /// The client's own retry counter (`x-stainless-retry-count`), 0 for a first attempt.
    public var retryCount = 0
    /// Context values that `requires` and `context.<k>` in conditions read, from `--context`,
    /// `X-MG-Context-<k>` headers and the check API's `context`.
    public var context: [String: String] = [:]

    public init(actions: [String], model: String, price: ModelPrice, inputTokensBound: Int, inputTokensEstimate: Int,
                requestedOutputTokens: Int? = nil, producesOutput: Bool = true, choices: Int = 1) {
        self.actions = actions
        self.model = model
        self.price = price
        self.inputTokensBound = inputTokensBound
        self.inputTokensEstimate = inputTokensEstimate
        self.requestedOutputTokens = requestedOutputTokens
        self.producesOutput = producesOutput
        self.choices = max(1, choices)
    }
}

/// The program a `code:execute` action runs.
public struct CodeFacts: Sendable, Equatable {
    public var language: String
    public var sandbox: String
    public var path: String

    public init(language: String, sandbox: String, path: String) {
        self.language = language
        self.sandbox = sandbox
        self.path = path
    }
}

/// Tokens a provider reported for one call, split by how each part is priced.
public struct Usage: Sendable, Equatable {
    /// Input tokens billed at the full input price.
    public var uncachedInputTokens: Int
    /// Input tokens read from a prompt cache.
    public var cacheReadTokens: Int
    /// Input tokens written to a prompt cache that lives 5 minutes (Anthropic).
    public var cacheWriteTokens: Int
    /// Input tokens written to a prompt cache with `ttl: 1h` (Anthropic).
    public var cacheWrite1hTokens = 0
    /// Output tokens, reasoning tokens included.
    public var outputTokens: Int
    /// True when the provider reported no usage and mg-run charged its own bound.
    public var estimated: Bool

    public init(uncachedInputTokens: Int, cacheReadTokens: Int = 0, cacheWriteTokens: Int = 0, outputTokens: Int, estimated: Bool = false) {
        self.uncachedInputTokens = uncachedInputTokens
        self.cacheReadTokens = cacheReadTokens
        self.cacheWriteTokens = cacheWriteTokens
        self.outputTokens = outputTokens
        self.estimated = estimated
    }

    public var inputTokens: Int { uncachedInputTokens + cacheReadTokens + cacheWriteTokens + cacheWrite1hTokens }

    public static let none = Usage(uncachedInputTokens: 0, outputTokens: 0)
}

extension CallDescriptor {
    /// Whether the call is research: a search, a document read or an external API call.
    public var isResearch: Bool {
        actions.contains { $0.hasPrefix("search:") || $0.hasPrefix("read:") || $0.hasPrefix("api:external:") }
    }

    /// Returns a search query reduced to its words, lowercased, sorted and without repeats, so rephrasings share a topic.
    public static func normalizedTopic(_ text: String) -> String? {
        let words = Set(text.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber }).map(String.init))
        return words.isEmpty ? nil : words.sorted().joined(separator: " ")
    }
}

public enum Pricing {
    /// Computes the settled cost of a call, with each part of the usage at its own price.
    public static func cost(of usage: Usage, at price: ModelPrice) -> USD {
        let picodollars = Int64(usage.uncachedInputTokens) * price.inputPerToken
            + Int64(usage.cacheReadTokens) * price.cachedInputPerToken
            + Int64(usage.cacheWriteTokens) * price.cacheWritePerToken
            + Int64(usage.cacheWrite1hTokens) * price.cacheWrite1hPerToken
            + Int64(usage.outputTokens) * price.outputPerToken
            + price.perCall
        return USD(picodollars: picodollars)
    }
}
