import MGPolicy

/// A call the governor let through, with the cost reserved for it.
public struct Admission: Sendable {
    public var id: UInt64
    /// The output cap to send upstream; nil when the call produces no output.
    public var outputTokens: Int?
    /// Whether mg-run must set or lower the client's output cap to `outputTokens`.
    public var rewritesOutputCap: Bool
    public var reservedCost: USD
    /// Audit level of the call: the highest any matched rule sets, and `none` only when every matched rule sets none.
    public var auditLevel = AuditLevel.basic
}

public struct Refusal: Sendable, Error {
    public enum Kind: Sendable, Equatable {
        /// A window that reopens after this many seconds.
        case window(retryAfterSeconds: Double)
        /// A ceiling that cannot reopen in this task.
        case quota
        /// The policy forbids the call as it is (deny rule, per-call cap, unpriced model).
        case forbidden
        /// The agent must finish: the call gets the conclusion reply, whatever on_limit_exceeded sets.
        case conclude
    }

    public var kind: Kind
    /// The limit that refused the call, such as `rules[0].rate_limit.max_per_minute`.
    public var limit: String
    /// A sentence for the agent and the audit log: what was refused, by which rule and where.
    public var message: String
    /// Set when this refusal means the run cannot go on, e.g. `cost_ceiling:max_usd_per_task`.
    public var stopReason: String?
    /// The layer and rule whose limit produced the refusal, when one did; a rule index of -1 is the layer's global limit.
    var origin: (layer: Int, rule: Int)?

    public init(kind: Kind, limit: String, message: String, stopReason: String? = nil) {
        self.kind = kind
        self.limit = limit
        self.message = message
        self.stopReason = stopReason
    }

    /// The kind of limit that refused the call, for fallback steps; nil for a refusal by a rule's effect,
    /// default_effect, a condition or the ledger.
    public var limitKind: LimitKind? {
        if limit.contains("max_usd_per_") || limit.hasPrefix("budget.") { return .cost }
        if limit.contains("rate_limit.") || limit.hasPrefix("global_rate_limit.") { return .rate }
        return nil
    }

    /// Forbidden outranks a ceiling, which outranks a window; among windows, the longer wait.
    func isMoreSevere(than other: Refusal) -> Bool {
        switch (kind, other.kind) {
        case (.forbidden, .forbidden), (.quota, .quota), (.conclude, .conclude): return false
        case (.forbidden, _): return true
        case (_, .forbidden): return false
        // Asking the agent to finish outranks spent budgets, which it would also end.
        case (.conclude, _): return true
        case (_, .conclude): return false
        case (.quota, _): return true
        case (_, .quota): return false
        case (.window(let mine), .window(let theirs)): return mine > theirs
        }
    }
}

public enum Decision: Sendable {
    case admit(Admission)
    case refuse(Refusal)

    public var admission: Admission? {
        if case .admit(let admission) = self { return admission }
        return nil
    }

    public var refusal: Refusal? {
        if case .refuse(let refusal) = self { return refusal }
        return nil
    }
}

/// Run totals, for the summary.
public struct Totals: Sendable, Equatable {
    public var calls = 0
    public var denied = 0
    /// Refused calls that got a graceful conclusion. They are also counted in `denied`.
    public var concluded = 0
    public var inputTokens = 0
    public var outputTokens = 0
    public var cost = USD.zero
    public var reserved = USD.zero
    public var inFlight = 0

    public init() {}
}

/// A budget threshold that the day's spend reached, for the caller to log and act on.
public struct BudgetEvent: Sendable, Equatable {
    public var file: String
    /// "warning" or "critical".
    public var level: String
    public var percent: Int
    public var spent: USD
    public var actions: [BudgetAction]
}

/// A trigger that held, with the values its condition read, for the log and the audit log.
public struct Trip: Sendable {
    public var trigger: Trigger
    public var values: String
    /// The trip's change to the governor (a halved limit, a token cap), or empty.
    public var effect = ""

    static func format(_ value: Double) -> String {
        value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(format: "%.6g", value)
    }
}
