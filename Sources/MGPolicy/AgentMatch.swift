/// How far a run is trusted, from `--trust-tier`; tiers are ordered.
public enum TrustTier: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case untrusted, basic, verified, privileged

    public init?(name: String) {
        guard let tier = TrustTier.allCases.first(where: { $0.description == name }) else { return nil }
        self = tier
    }

    public var description: String {
        switch self {
        case .untrusted: return "untrusted"
        case .basic: return "basic"
        case .verified: return "verified"
        case .privileged: return "privileged"
        }
    }

    public static func < (lhs: TrustTier, rhs: TrustTier) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The identity of a governed run, from its options, for `agent_match` and conditions.
public struct RunIdentity: Sendable {
    public var agentID: String
    public var tags: [String]
    public var environment: String?
    public var trustTier: TrustTier
    /// `--context k=v` pairs.
    public var context: [String: String]

    public init(agentID: String = "default", tags: [String] = [], environment: String? = nil, trustTier: TrustTier = .basic, context: [String: String] = [:]) {
        self.agentID = agentID
        self.tags = tags
        self.environment = environment
        self.trustTier = trustTier
        self.context = context
    }

    public var summary: String {
        let tagText = tags.isEmpty ? "none" : tags.joined(separator: ", ")
        return "tags: \(tagText); environment: \(environment ?? "none"); agent id: \(agentID); trust tier: \(trustTier)"
    }
}

/// `agent_match`: which runs a layer applies to. Every condition that is set must hold.
public struct AgentMatch: Sendable {
    /// Tags (globs) that must each match one of the run's tags.
    public var tags: [String] = []
    /// Environments (globs) of which the run's must match one.
    public var environments: [String]?
    /// Globs of which the run's agent id must match one.
    public var tokens: [String]?
    public var minimumTrustTier: TrustTier?

    public init() {}

    /// Returns nil when the run matches, else the first reason it does not.
    public func mismatch(_ run: RunIdentity) -> String? {
        // Tags and environments may be globs such as eu-*; every listed tag must match one of the run's.
        if let missing = tags.first(where: { pattern in !run.tags.contains(where: Rule(action: pattern).matches) }) {
            return "it needs a tag matching '\(missing)' (--tag)"
        }
        if let environments, !environments.contains(where: { Rule(action: $0).matches(run.environment ?? "") }) || run.environment == nil {
            return "it needs environment \(environments.joined(separator: " or ")) (--env)"
        }
        if let tokens, !tokens.contains(where: { Rule(action: $0).matches(run.agentID) }) {
            return "it needs an agent id matching \(tokens.joined(separator: " or ")) (--agent-id)"
        }
        if let minimum = minimumTrustTier, run.trustTier < minimum {
            return "it needs trust tier \(minimum) or higher (--trust-tier)"
        }
        return nil
    }

    /// Describes the match for `check --explain`.
    public var description: String {
        var parts: [String] = []
        if !tags.isEmpty { parts.append("tags \(tags.joined(separator: ", "))") }
        if let environments { parts.append("environment \(environments.joined(separator: " or "))") }
        if let tokens { parts.append("agent id \(tokens.joined(separator: " or "))") }
        if let minimumTrustTier { parts.append("trust tier \(minimumTrustTier) or higher") }
        return parts.isEmpty ? "every run" : parts.joined(separator: "; ")
    }
}
