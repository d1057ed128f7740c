/// Parsing of names and window suffixes. An identifier resolves to a variable, a metric or a named
/// list, and a metric may be followed by `in last 5 minutes` or `over 10 calls`.
extension ExpressionParser {
    mutating func parseName(_ name: String) throws(ConditionError) -> Operand {
        let token = advance()
        let resolved: ResolvedName
        switch ExpressionNames.resolve(name, namedLists: namedLists) {
        case .success(let value): resolved = value
        case .failure(let error): throw locator.error(at: token.offset, error.message)
        }

        let suffix = try parseSuffix(allowMembershipFallback: !resolved.isMetric)
        let end = suffix?.end ?? token.offset + token.text.unicodeScalars.count
        let metric: Metric
        switch resolved {
        case .variable(let variable, let kind):
            if let suffix {
                throw locator.error(
                    at: suffix.start, "a window suffix applies only to a metric, but '\(name)' is a variable; remove '\(suffix.text)'")
            }
            variables.insert(variable)
            return Operand(node: .variable(variable), kind: kind, depth: 1, start: token.offset, end: end)
        case .namedList(let value):
            if let suffix {
                throw locator.error(
                    at: suffix.start, "a window suffix applies only to a metric, but '\(name)' is a named list; remove '\(suffix.text)'")
            }
            return Operand(node: .constant(value), kind: ValueKind(of: value), depth: 1, start: token.offset, end: end)
        case .metric(let fixed):
            if let suffix {
                throw locator.error(at: suffix.start, "'\(name)' \(fixed.suffixConflict); remove '\(suffix.text)'")
            }
            metric = fixed
        case .windowable(let windowable):
            metric = try applySuffix(suffix, to: windowable, name: name, at: token)
        }

        // A second suffix, as in `errors in last 5 minutes over 10 calls`.
        if let extra = try parseSuffix(allowMembershipFallback: false) {
            throw locator.error(
                at: extra.start, "\(quote(text(from: token.offset, to: end))) already has a window; remove '\(extra.text)'")
        }
        metrics.insert(metric)
        return Operand(node: .metric(metric), kind: .number, depth: 1, start: token.offset, end: end)
    }

    private func applySuffix(
        _ suffix: Suffix?, to windowable: WindowableMetric, name: String, at token: Token
    ) throws(ConditionError) -> Metric {
        switch (windowable, suffix?.window) {
        case (.measure, nil):
            throw locator.error(
                at: token.offset,
                "'\(name)' needs a window; write \(name)_last_hour, \(name)_today or \(name)_task, or add a suffix as in '\(name) in last 5 minutes' or '\(name) over 20 calls'")
        case (.measure(let measure), .seconds(let seconds)?):
            return .measure(measure, .seconds(seconds))
        case (.measure(let measure), .calls(let count)?):
            return .measure(measure, .calls(count))
        case (.sameActionCount, nil):
            return .sameActionCount(windowSeconds: ExpressionNames.defaultSameActionWindow)
        case (.sameActionCount, .seconds(let seconds)?):
            return .sameActionCount(windowSeconds: seconds)
        case (.sameActionCount, .calls?):
            throw locator.error(
                at: suffix?.start ?? token.offset,
                "'\(name)' counts over a time window, not over calls; write '\(name) in last 10 minutes'")
        case (.tokensPerCallTrend, nil):
            return .tokensPerCallTrend(calls: ExpressionNames.defaultTrendCalls)
        case (.tokensPerCallTrend, .calls(let count)?):
            return .tokensPerCallTrend(calls: count)
        case (.tokensPerCallTrend, .seconds?):
            throw locator.error(
                at: suffix?.start ?? token.offset,
                "'\(name)' compares a call with an earlier one, not a time window; write '\(name) over 10 calls'")
        }
    }

    /// A window suffix as written: `in last 5 minutes` or `over 10 calls`.
    struct Suffix {
        enum Window {
            case seconds(Double)
            case calls(Int)
        }

        var window: Window
        var text: String
        var start: Int
        var end: Int
    }

    /// Reads a window suffix at the current token, or returns nil when there is none.
    ///
    /// `in last` after a variable may still be membership in a named list called `last`, so unless
    /// a number or a unit follows, it is left for the comparison parser when `allowMembershipFallback` is set.
    mutating func parseSuffix(allowMembershipFallback: Bool) throws(ConditionError) -> Suffix? {
        let first = current
        if case .keyword(.in) = first.kind, token(after: 1).isWord("last") {
            if allowMembershipFallback {
                let next = token(after: 2)
                let startsWindow: Bool
                switch next.kind {
                case .number: startsWindow = true
                case .identifier(let word): startsWindow = TimeUnit.seconds(of: word) != nil
                default: startsWindow = false
                }
                guard startsWindow else { return nil }
            }
            advance()
            let last = advance()
            return try parseTimeWindow(first: first, last: last)
        }
        if first.isWord("over") {
            advance()
            return try parseCallWindow(first: first)
        }
        return nil
    }

    private mutating func parseTimeWindow(first: Token, last: Token) throws(ConditionError) -> Suffix {
        var count = 1.0
        var countToken: Token?
        if case .number(let number) = current.kind {
            countToken = current
            count = number
            advance()
        }
        let written = countToken.map { "last \($0.text)" } ?? "last"
        if let countToken, countToken.text.lowercased().hasSuffix("x") {
            throw locator.error(at: countToken.offset, "invalid window '\(countToken.text)'; write a plain number, as in 'in last 5 minutes'")
        }

        guard case .identifier(let unit) = current.kind else {
            throw locator.error(
                at: (countToken ?? last).offset,
                "missing unit after '\(written)'; write a unit (s, min, h, d, or their long names), as in 'in last 5 minutes'")
        }
        guard let unitSeconds = TimeUnit.seconds(of: unit) else {
            if countToken == nil {
                throw locator.error(
                    at: current.offset, "expected a number after 'in last', got '\(unit)'; write it in digits, as in 'in last 5 minutes'")
            }
            var message = "unknown unit '\(unit)' in 'in \(written) \(unit)'"
            if let suggestion = closestMatch(to: unit.lowercased(), among: TimeUnit.names) {
                message += " (did you mean '\(suggestion)'?)"
            } else {
                message += "; units are s, sec, min, minute(s), h, hour(s), d and day(s)"
            }
            throw locator.error(at: current.offset, message)
        }
        let unitToken = advance()
        let text = "in \(written) \(unit)"
        guard count > 0 else {
            throw locator.error(
                at: (countToken ?? first).offset,
                "a window of 0 covers nothing in '\(text)'; write a window of at least 1, as in 'in last 5 \(unit)'")
        }
        let end = unitToken.offset + unitToken.text.unicodeScalars.count
        return Suffix(window: .seconds(count * unitSeconds), text: text, start: first.offset, end: end)
    }

    private mutating func parseCallWindow(first: Token) throws(ConditionError) -> Suffix {
        guard case .number(let number) = current.kind else {
            throw locator.error(
                at: first.offset, "expected a number of calls after '\(first.text)', as in 'over 10 calls'")
        }
        let countToken = advance()
        let text = "over \(countToken.text) calls"
        guard countToken.text.allSatisfy(\.isNumber), let count = Int(exactly: number) else {
            throw locator.error(
                at: countToken.offset, "the count in '\(text)' must be a whole number, as in 'over 10 calls'")
        }
        guard count >= 1 else {
            throw locator.error(
                at: countToken.offset, "'\(text)' covers no calls; write a count of at least 1, as in 'over 10 calls'")
        }
        guard current.isWord("calls") || current.isWord("call") else {
            throw locator.error(
                at: countToken.offset,
                "expected 'calls' after 'over \(countToken.text)'; write 'over \(countToken.text) calls'")
        }
        let callsToken = advance()
        let end = callsToken.offset + callsToken.text.unicodeScalars.count
        return Suffix(window: .calls(count), text: text, start: first.offset, end: end)
    }
}

extension ResolvedName {
    fileprivate var isMetric: Bool {
        switch self {
        case .metric, .windowable: true
        case .variable, .namedList: false
        }
    }
}

extension ValueKind {
    fileprivate init(of value: ExpressionValue) {
        switch value {
        case .number: self = .number
        case .string: self = .string
        case .bool: self = .bool
        case .list: self = .list
        case .missing: self = .unknown
        }
    }
}

extension Metric {
    /// The reason a window suffix cannot follow this already complete metric.
    fileprivate var suffixConflict: String {
        switch self {
        case .measure, .average, .costToday: "already has a window"
        case .currentCost, .averageCost, .sameActionRepeated, .sameActionCount, .tokensPerCallTrend: "takes no window suffix"
        }
    }
}
