/// A seccomp profile as written in `profiles/seccomp/*.seccomp`: a default action and rules, one per
/// line. Parsing is pure; mg-run's supervisor compiles the result with libseccomp.
public struct SeccompRules: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        case allow
        /// Fail with this errno value.
        case errno(Int32)
        /// Ask mg-run's supervisor, through a seccomp user notification (code:execute).
        case notify
    }

    /// A comparison of one system call argument.
    public struct Condition: Sendable, Equatable {
        public enum Comparison: Sendable, Equatable {
            case equal(UInt64)
            case notEqual(UInt64)
            /// `argument & mask == value`.
            case maskedEqual(mask: UInt64, value: UInt64)
        }

        public var argument: Int
        public var comparison: Comparison
    }

    public struct Rule: Sendable, Equatable {
        public var action: Action
        public var systemCall: String
        /// The rule applies only when one of these holds; none means always. libseccomp adds one
        /// rule per condition, so a list reads as "any of".
        public var anyOf: [Condition]
        /// The line of the profile the rule came from.
        public var line: Int
    }

    public var defaultAction: Action
    public var rules: [Rule]

    /// The errno names a profile may use.
    public static let errnoValues: [String: Int32] = [
        "EPERM": 1, "ENOENT": 2, "EACCES": 13, "EINVAL": 22, "ENOSYS": 38, "EOPNOTSUPP": 95, "EAFNOSUPPORT": 97,
    ]

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    /// Parses a profile's text; the error names the line and what to write instead.
    public static func parse(_ text: String) throws(ParseError) -> SeccompRules {
        var defaultAction: Action?
        var rules: [Rule] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            let content = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            var words = content.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard !words.isEmpty else { continue }
            var conditionWords: [String] = []
            if let ifIndex = words.firstIndex(of: "if") {
                conditionWords = Array(words[(ifIndex + 1)...])
                words = Array(words[..<ifIndex])
            }
            let verb = words.removeFirst()
            let action: Action
            switch verb {
            case "default":
                guard conditionWords.isEmpty else {
                    throw ParseError(line: number, message: "the default action takes no condition; remove 'if ...'")
                }
                let (parsed, rest) = try parseAction(words, line: number)
                guard rest.isEmpty else {
                    throw ParseError(line: number, message: "unexpected '\(rest.joined(separator: " "))' after the default action; write 'default errno ENOSYS' or 'default allow'")
                }
                guard defaultAction == nil else { throw ParseError(line: number, message: "a second default action; keep one") }
                defaultAction = parsed
                continue
            case "allow", "errno", "notify":
                let (parsed, rest) = try parseAction([verb] + words, line: number)
                action = parsed
                words = rest
            default:
                throw ParseError(line: number, message: "unknown rule '\(verb)'; a line starts with default, allow, errno or notify")
            }
            guard !words.isEmpty else {
                throw ParseError(line: number, message: "'\(verb)' names no system call; list at least one, such as 'allow read write'")
            }
            let conditions = try conditionWords.isEmpty ? [] : parseConditions(conditionWords, line: number)
            for name in words {
                guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                    throw ParseError(line: number, message: "'\(name)' is not a system call name")
                }
                rules.append(Rule(action: action, systemCall: name, anyOf: conditions, line: number))
            }
        }
        guard let defaultAction else {
            throw ParseError(line: 1, message: "no default action; add a line such as 'default errno ENOSYS'")
        }
        // libseccomp keeps one action per unconditional system call; a second one is a mistake in the profile.
        var unconditional: [String: Int] = [:]
        for rule in rules where rule.anyOf.isEmpty {
            if let first = unconditional[rule.systemCall] {
                throw ParseError(line: rule.line, message: "\(rule.systemCall) already has a rule on line \(first); keep one, or add 'if' conditions")
            }
            unconditional[rule.systemCall] = rule.line
        }
        return SeccompRules(defaultAction: defaultAction, rules: rules)
    }

    /// Reads `allow`, `notify` or `errno NAME` from the front of `words`; returns the rest.
    private static func parseAction(_ words: [String], line: Int) throws(ParseError) -> (Action, [String]) {
        guard let first = words.first else {
            throw ParseError(line: line, message: "missing action; write allow, notify or errno NAME")
        }
        switch first {
        case "allow": return (.allow, Array(words.dropFirst()))
        case "notify": return (.notify, Array(words.dropFirst()))
        case "errno":
            guard words.count >= 2, let value = errnoValues[words[1]] else {
                let known = errnoValues.keys.sorted().joined(separator: ", ")
                throw ParseError(line: line, message: "errno needs an error name, one of \(known); got '\(words.count >= 2 ? words[1] : "")'")
            }
            return (.errno(value), Array(words.dropFirst(2)))
        default:
            throw ParseError(line: line, message: "unknown action '\(first)'; use allow, notify or errno NAME")
        }
    }

    /// Parses `argN == V`, `argN != V`, `argN & M == V` or `argN & M != 0`.
    private static func parseConditions(_ words: [String], line: Int) throws(ParseError) -> [Condition] {
        let usage = "write a condition as 'if arg0 == 22', 'if arg0 != 22', 'if arg0 & 0xFF == 0' or 'if arg0 & 0xFF != 0'"
        guard words.count == 3 || words.count == 5, words[0].hasPrefix("arg"), let argument = Int(words[0].dropFirst(3)), (0...5).contains(argument) else {
            throw ParseError(line: line, message: "invalid condition '\(words.joined(separator: " "))'; \(usage)")
        }
        if words.count == 3 {
            guard let value = number(words[2]) else {
                throw ParseError(line: line, message: "'\(words[2])' is not a number; \(usage)")
            }
            switch words[1] {
            case "==": return [Condition(argument: argument, comparison: .equal(value))]
            case "!=": return [Condition(argument: argument, comparison: .notEqual(value))]
            default: throw ParseError(line: line, message: "unknown comparison '\(words[1])'; \(usage)")
            }
        }
        guard words[1] == "&", let mask = number(words[2]), let value = number(words[4]) else {
            throw ParseError(line: line, message: "invalid condition '\(words.joined(separator: " "))'; \(usage)")
        }
        switch words[3] {
        case "==":
            guard value & ~mask == 0 else {
                throw ParseError(line: line, message: "\(words[4]) has bits outside the mask \(words[2]), so the condition is never true")
            }
            return [Condition(argument: argument, comparison: .maskedEqual(mask: mask, value: value))]
        case "!=":
            // "Any bit of the mask set": one masked comparison per bit, since seccomp compares for equality only.
            guard value == 0, mask != 0 else {
                throw ParseError(line: line, message: "a masked '!=' compares with 0 only, as in 'if arg0 & 0xFF != 0'")
            }
            return (0..<64).filter { mask >> $0 & 1 == 1 }.map { bit in
                Condition(argument: argument, comparison: .maskedEqual(mask: 1 << bit, value: 1 << bit))
            }
        default:
            throw ParseError(line: line, message: "unknown comparison '\(words[3])'; \(usage)")
        }
    }

    private static func number(_ text: String) -> UInt64? {
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt64(text.dropFirst(2), radix: 16) }
        return UInt64(text)
    }

    /// Returns whether a profile name given to `run.sandbox.profile` or `--profile` names a file (it has a
    /// slash or ends in `.seccomp`) rather than a shipped profile.
    public static func namesFile(_ profile: String) -> Bool {
        profile.contains("/") || profile.hasSuffix(".seccomp")
    }

    /// Adds `notify` rules for these system calls, replacing the rules they had (for code:execute).
    public func notifying(_ systemCalls: [String]) -> SeccompRules {
        var copy = self
        copy.rules.removeAll { systemCalls.contains($0.systemCall) }
        copy.rules += systemCalls.map { Rule(action: .notify, systemCall: $0, anyOf: [], line: 0) }
        return copy
    }
}
