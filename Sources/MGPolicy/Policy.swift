import Foundation

public enum Effect: String, Sendable {
    case allow, deny
}

/// `audit` on a rule: how much of its calls the audit log keeps.
public enum AuditLevel: String, Sendable, Comparable, CaseIterable {
    /// No line for allowed calls; refusals are still audited.
    case none
    /// One line per call: action, decision, tokens, cost.
    case basic
    /// The line plus the request and response bodies, with secrets redacted.
    case detailed

    public static func < (lhs: AuditLevel, rhs: AuditLevel) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// Count and token limits of one rule.
public struct RateLimit: Sendable, Equatable {
    /// `window: fixed`: windows start at calendar boundaries (UTC) instead of rolling with each call.
    public var fixedWindows = false
    public var maxPerSecond: Int?
    public var maxPerMinute: Int?
    public var maxPerHour: Int?
    public var maxPerDay: Int?
    public var maxPerTask: Int?
    /// Input (estimated) plus output tokens of one call.
    public var maxTokensPerCall: Int?
    /// Estimated input tokens of one call.
    public var maxInputTokensPerCall: Int?
    /// Output tokens of one call, all choices together; enforced by capping max_tokens.
    public var maxOutputTokensPerCall: Int?
    /// Calls of this rule in flight at once; for `delegate:*`, live sub-agents.
    public var maxConcurrent: Int?
    /// For `delegate:*`: the deepest nesting of sub-agents allowed; the top run is depth 0.
    public var maxDepth: Int?
    /// Input plus output tokens per window.
    public var maxTokensPerMinute: Int?
    public var maxTokensPerHour: Int?
    public var maxTokensPerDay: Int?
    /// Calls of the same action in a row, after which the action is denied until another one happens.
    public var maxConsecutive: Int?
    /// Seconds the rule's actions stay denied after any limit of this object is hit.
    public var cooldownSeconds: Int?
    /// Failed attempts of one request (same body) after which its retries are denied.
    public var maxRetries: Int?
    /// Seconds a retry must wait after the failure it repeats.
    public var retryDelaySeconds: Int?
    /// Unsuccessful results in a row (upstream errors and denials) after which the rule's actions are stopped for the task.
    public var maxConsecutiveFailures: Int?

    public init(maxPerSecond: Int? = nil, maxPerMinute: Int? = nil, maxPerHour: Int? = nil, maxPerDay: Int? = nil, maxPerTask: Int? = nil,
                maxTokensPerCall: Int? = nil) {
        self.maxPerSecond = maxPerSecond
        self.maxPerMinute = maxPerMinute
        self.maxPerHour = maxPerHour
        self.maxPerDay = maxPerDay
        self.maxPerTask = maxPerTask
        self.maxTokensPerCall = maxTokensPerCall
    }
}

public struct CostCeiling: Sendable, Equatable {
    public var maxUSDPerCall: USD?
    public var maxUSDPerTask: USD?
    /// Spend per window, rolling or fixed as set by the rule's rate limit.
    public var maxUSDPerMinute: USD?
    public var maxUSDPerHour: USD?
    public var maxUSDPerDay: USD?
    /// The section each ceiling was written in, `cost_ceiling` or `rate_limit`, for messages.
    public var perCallSection = "cost_ceiling"
    public var perTaskSection = "cost_ceiling"
    public var windowSection = "cost_ceiling"

    public init(maxUSDPerCall: USD? = nil, maxUSDPerTask: USD? = nil) {
        self.maxUSDPerCall = maxUSDPerCall
        self.maxUSDPerTask = maxUSDPerTask
    }

    /// Adds the window ceilings written under `rate_limit`; the lower of two wins.
    public mutating func mergeWindows(perMinute: USD?, perHour: USD?, perDay: USD?) {
        func lower(_ a: USD?, _ b: USD?) -> USD? {
            guard let a else { return b }
            guard let b else { return a }
            return min(a, b)
        }
        let before = (maxUSDPerMinute, maxUSDPerHour, maxUSDPerDay)
        maxUSDPerMinute = lower(maxUSDPerMinute, perMinute)
        maxUSDPerHour = lower(maxUSDPerHour, perHour)
        maxUSDPerDay = lower(maxUSDPerDay, perDay)
        if before != (maxUSDPerMinute, maxUSDPerHour, maxUSDPerDay) { windowSection = "rate_limit" }
    }

    /// Adds a ceiling written under `rate_limit`, which means the same as under `cost_ceiling`; the lower one wins.
    public mutating func merge(perCall: USD?, perTask: USD?) {
        if let perCall, perCall < (maxUSDPerCall ?? perCall + USD(picodollars: 1)) {
            maxUSDPerCall = perCall
            perCallSection = "rate_limit"
        }
        if let perTask, perTask < (maxUSDPerTask ?? perTask + USD(picodollars: 1)) {
            maxUSDPerTask = perTask
            perTaskSection = "rate_limit"
        }
    }
}

public struct Rule: Sendable {
    /// A glob over action names; `*` matches any run of characters, `:` included.
    public var action: String
    public var effect: Effect
    public var rateLimit: RateLimit
    public var costCeiling: CostCeiling
    /// After this many LLM calls that write output in the task, every further one gets the conclusion reply.
    public var requireConclusionAfter: Int?
    /// Research actions (`search:*`, `read:*`, `api:external:*`) in a row without an LLM call that writes output.
    public var maxConsecutiveResearch: Int?
    /// Calls with the same topic (`X-MG-Topic`, or the normalized search query) in the task.
    public var maxIterationsPerTopic: Int?
    /// Kept allowed when a budget threshold pauses non-essential actions.
    public var essential = false
    public var audit = AuditLevel.basic
    /// `conditions`: the rule applies only to operations for which every one holds.
    public var conditions: [Condition] = []
    /// `requires`: context values the operation must carry, as text (`true`, `verified`).
    public var requires: [(key: String, value: String)] = []
    /// The rule's start position and key path such as `rules[2]`, for messages.
    public var position: SourcePosition
    public var path: String

    public init(action: String, effect: Effect = .allow, rateLimit: RateLimit = RateLimit(), costCeiling: CostCeiling = CostCeiling(),
                position: SourcePosition = SourcePosition(file: "<memory>", line: 1, column: 1), path: String = "rules[0]") {
        self.action = action
        self.effect = effect
        self.rateLimit = rateLimit
        self.costCeiling = costCeiling
        self.position = position
        self.path = path
    }

    /// The key path of the rule's limits, for messages: `rules[2].rate_limit`, or `global_rate_limit` for a layer-wide limit.
    public var limitsPath: String {
        path == "global_rate_limit" || path == "rate_limit" ? path : "\(path).rate_limit"
    }

    /// Returns the key path of a dollar ceiling, under the section it was written in.
    public func ceilingPath(_ key: String, section: String) -> String {
        section.isEmpty ? "\(path).\(key)" : "\(path).\(section).\(key)"
    }

    public func matches(_ actionName: String) -> Bool {
        var pattern = action
        var name = actionName
        // Contiguous UTF-8 views, so matching a call against every rule allocates nothing.
        return pattern.withUTF8 { patternBytes in
            name.withUTF8 { nameBytes in globMatches(pattern: patternBytes, name: nameBytes) }
        }
    }
}

public enum LimitResponse: String, Sendable {
    /// A native refusal in the client's API (429 or 403).
    case deny
    /// A normal completion whose text is the message, at zero cost.
    case gracefulConclude = "graceful_conclude"
    /// Hold the call until a window reopens, at most `queueTimeoutSeconds`, then deny.
    case queue
    /// Stop the run.
    case kill
    /// Freeze the agent until the window that refused the call reopens, or until `mg-run resume`.
    case pause
}

/// The kind of limit a refusal came from, for `fallback_chain` entries' `when`.
public enum LimitKind: String, Sendable {
    /// A dollar limit: a cost ceiling, a `max_usd_*` window or the daily budget.
    case cost = "cost_limit_hit"
    /// A count, token, concurrency or retry limit of a rate-limit object.
    case rate = "rate_limit_hit"
    /// Any limit of either kind.
    case any = "all_limits_hit"
}

/// One `fallback_chain` step: a call to a model matching `from` that hits a limit of kind `when` is retried as `to`.
public struct FallbackStep: Sendable, Equatable {
    public enum Target: Sendable, Equatable {
        case model(String)
        case queue
    }

    /// A glob over action names, such as `llm:gpt-4*`.
    public var from: String
    public var to: Target
    public var when: LimitKind

    public init(from: String, to: Target, when: LimitKind) {
        self.from = from
        self.to = to
        self.when = when
    }

    /// Returns whether this step applies to a call named `action` refused by a limit of kind `kind`.
    public func applies(to action: String, refusedBy kind: LimitKind) -> Bool {
        (when == .any || when == kind) && Rule(action: from).matches(action)
    }
}

/// One `optimization.model_fallback` rule: while `when` holds, calls to a model matching `from` go to `to`.
public struct ModelFallback: Sendable {
    public var when: Condition?
    /// A glob over action names, such as `llm:gpt-4*`.
    public var from: String
    public var to: String
    /// Globs of which the call must match one; empty for every call.
    public var forActions: [String]
    public var path: String

    public init(when: Condition?, from: String, to: String, forActions: [String] = [], path: String) {
        self.when = when
        self.from = from
        self.to = to
        self.forActions = forActions
        self.path = path
    }

    /// Returns whether the fallback moves a call with these names, before its condition is checked.
    public func covers(_ actions: [String]) -> Bool {
        actions.contains(where: Rule(action: from).matches)
            && (forActions.isEmpty || forActions.contains { glob in actions.contains(where: Rule(action: glob).matches) })
    }
}

/// `run`: how long the agent may run and the limits of its sandbox.
public struct RunSettings: Sendable {
    public var maxDurationSeconds: Double?
    public var killGraceSeconds: Double?
    /// `sandbox.network`: proxy_only, none or host.
    public var network: String?
    /// `sandbox.rlimits`, by key: cpu_seconds, memory_mb, processes, open_files, file_size_mb.
    public var rlimits: [String: Int] = [:]
    /// `sandbox.profile`: agent, strict, none, or the path of a seccomp profile file.
    public var sandboxProfile: String?
    /// `sandbox.writable`: with any, the file system is read-only for the agent but these paths.
    public var writable: [String]?
    /// `code_execute`: which executed programs are code:execute actions.
    public var codeExecute: CodeExecuteSettings?
    /// `on_trip`: the action (pause or kill) of a trigger that names none.
    public var onTrip: Trigger.Action?

    public init() {}

    /// Parses "90s", "30m", "8h" or "1.5h" into seconds; returns nil for anything else.
    public static func durationSeconds(_ text: String) -> Double? {
        guard let unit = text.last, let amount = Double(text.dropLast()), amount > 0 else { return nil }
        switch unit {
        case "s": return amount
        case "m": return amount * 60
        case "h": return amount * 3_600
        default: return nil
        }
    }
}

/// `optimization`: cheaper models and shorter contexts.
public struct Optimization: Sendable {
    public var modelFallbacks: [ModelFallback] = []
    /// `context_trimming.max_context_tokens` when trimming is enabled.
    public var maxContextTokens: Int?

    public init() {}
}

/// One `notify` entry of `on_limit_exceeded`: a message with placeholders sent when a limit is hit.
public struct LimitNotification: Sendable, Equatable {
    public var channel: String
    public var message: String

    public init(channel: String, message: String) {
        self.channel = channel
        self.message = message
    }
}

public struct OnLimitExceeded: Sendable {
    public var action: LimitResponse
    public var messageToAgent: String
    /// The seconds a queued call waits before it is denied.
    public var queueTimeoutSeconds: Double = 60
    /// `strategy: graceful_degradation`: model rewrites tried, in order, before a refusal is returned.
    public var fallbackChain: [FallbackStep] = []
    public var notify: [LimitNotification] = []

    public static let defaultMessage = "A budget or rate limit set by the operator has been reached. Stop calling tools and models, write your final answer with what you have, and finish."

    public init(action: LimitResponse = .deny, messageToAgent: String = OnLimitExceeded.defaultMessage) {
        self.action = action
        self.messageToAgent = messageToAgent
    }
}

/// An action a budget threshold takes once the day's spend reaches it.
public enum BudgetAction: Sendable, Equatable {
    /// Deny actions of rules not marked `essential`; with none marked, only `llm:*` stays allowed.
    case pauseNonEssential
    /// A warning line in mg-run's log, until alert channels exist.
    case notifyOps
    /// Multiply every count limit of the layer by 1 - P/100.
    case reduceRateLimitsBy(percent: Int)
    /// Stop the run.
    case kill
    /// Freeze the agent until the next day starts (midnight UTC) or `mg-run resume`.
    case pause
}

/// `budget`: a daily spend limit with warning and critical thresholds.
public struct Budget: Sendable {
    /// A ceiling on the day's spend over all actions; the day starts at midnight UTC.
    public var dailyLimit: USD
    public var warningPercent: Int?
    public var criticalPercent: Int?
    public var onWarning: [BudgetAction] = []
    public var onCritical: [BudgetAction] = []
    public var position: SourcePosition

    public init(dailyLimit: USD, warningPercent: Int? = nil, criticalPercent: Int? = nil, position: SourcePosition = SourcePosition(file: "<memory>", line: 1, column: 1)) {
        self.dailyLimit = dailyLimit
        self.warningPercent = warningPercent
        self.criticalPercent = criticalPercent
        self.position = position
    }
}

/// One policy file: a layer. Several layers apply together, and every limit of each must hold.
public struct Policy: Sendable {
    public var file: String
    /// `name`, `version`, `description` and the other descriptive keys, as text.
    public var metadata: [String: String]
    public var defaultEffect: Effect
    public var rules: [Rule]
    public var onLimitExceeded: OnLimitExceeded?
    /// `global_rate_limit` (or top-level `rate_limit`): limits over all of the layer's actions together.
    /// It does not allow anything; rules still decide what is allowed.
    public var globalRule: Rule?
    public var budget: Budget?
    /// `unknown_model`: true for `allow_free`, false for `deny`, nil when the layer does not set it.
    public var unknownModelAllowFree: Bool?
    /// `prices:` entries by model glob, overriding the price table.
    public var priceOverrides: [(glob: String, price: ModelPrice)] = []
    public var optimization: Optimization?
    /// `run`: supervisor settings, of which mg-run enforces these so far.
    public var run: RunSettings?
    /// The triggers of `circuit_breaker`, `emergency_stop` and `anomaly_detection`.
    public var triggers: [Trigger] = []
    /// `time_restrictions`: when the agent may work.
    public var timeRestrictions: TimeRestrictions?
    /// `scaling` tiers, shown by `check --explain` and not enforced: name, agents, daily budget, per-agent limit, dedicated support.
    public var scaling: [(name: String, agents: Int?, dailyBudget: USD?, perAgentLimit: USD?, dedicatedSupport: Bool?)] = []
    /// `upstreams:` by provider name (`openai`, `anthropic`): where to forward, and the variable holding the key.
    public var upstreams: [String: (baseURL: String, keyVariable: String?)] = [:]
    /// Top-level lists of scalars, by name, for conditions (`request.domain in allowed_domains`).
    public var namedLists: [String: ExpressionValue] = [:]
    /// The runs the layer applies to; nil matches every run.
    public var agentMatch: AgentMatch?

    public init(file: String = "<memory>", metadata: [String: String] = [:], defaultEffect: Effect = .deny, rules: [Rule] = [], onLimitExceeded: OnLimitExceeded? = nil) {
        self.file = file
        self.metadata = metadata
        self.defaultEffect = defaultEffect
        self.rules = rules
        self.onLimitExceeded = onLimitExceeded
    }
}

/// Matches `*` against any run of bytes; every other byte matches itself.
func globMatches(pattern: UnsafeBufferPointer<UInt8>, name: UnsafeBufferPointer<UInt8>) -> Bool {
    var p = 0, n = 0
    var starAt = -1, resumeAt = 0
    let star = UInt8(ascii: "*")
    while n < name.count {
        if p < pattern.count && pattern[p] == star {
            starAt = p
            resumeAt = n
            p += 1
        } else if p < pattern.count && pattern[p] == name[n] {
            p += 1
            n += 1
        } else if starAt >= 0 {
            p = starAt + 1
            resumeAt += 1
            n = resumeAt
        } else {
            return false
        }
    }
    while p < pattern.count && pattern[p] == star { p += 1 }
    return p == pattern.count
}
