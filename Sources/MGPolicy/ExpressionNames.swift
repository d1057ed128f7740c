/// The time units of windows and buckets.
enum TimeUnit {
    /// Returns the seconds in one unit named `word` (any letter case), or nil for an unknown unit.
    static func seconds(of word: String) -> Double? {
        switch word.lowercased() {
        case "s", "sec", "secs", "second", "seconds": 1
        case "min", "mins", "minute", "minutes": 60
        case "h", "hour", "hours": 3600
        case "d", "day", "days": 86_400
        default: nil
        }
    }

    static let names = ["s", "sec", "secs", "second", "seconds", "min", "mins", "minute", "minutes",
                        "h", "hour", "hours", "d", "day", "days"]
}

/// The static type of a variable or subexpression, used to reject operators that cannot work on it.
enum ValueKind: Sendable, Equatable {
    case number, string, bool, list
    /// A value whose type is known only at run time, such as a context value.
    case unknown

    var name: String {
        switch self {
        case .number: "a number"
        case .string: "a string"
        case .bool: "a boolean"
        case .list: "a list"
        case .unknown: "a value"
        }
    }
}

/// The meaning of a name in a condition.
enum ResolvedName {
    case variable(String, ValueKind)
    case metric(Metric)
    /// A metric that a window suffix may still change. A bare measure needs a suffix, and
    /// `same_action_count` and `tokens_per_call_trend` have defaults.
    case windowable(WindowableMetric)
    case namedList(ExpressionValue)
}

enum WindowableMetric {
    case measure(MetricMeasure)
    case sameActionCount
    case tokensPerCallTrend
}

enum ExpressionNames {
    /// The variables with fixed names and their kinds. Names under `context.` are checked separately.
    static let variables: [String: ValueKind] = [
        "time.hour": .number, "time.minute": .number, "time.weekday": .string, "time.date": .string,
        "request.model": .string, "request.domain": .string, "request.path": .string,
        "request.max_tokens": .number, "request.input_tokens": .number,
        "code.language": .string, "code.sandbox": .string, "code.path": .string,
        "agent.id": .string, "agent.tags": .list, "agent.trust_tier": .string,
        "task.id": .string, "task.calls": .number, "task.iterations": .number,
        "estimated_cost_usd": .number,
    ]

    static let fixedMetrics: [String: Metric] = [
        "cost_today": .costToday, "daily_cost": .costToday,
        "current_cost": .currentCost, "average_cost": .averageCost,
        "same_action_repeated": .sameActionRepeated,
    ]

    /// Trust tiers, lowest first.
    static let trustTiers = ["untrusted", "basic", "verified", "privileged"]
    static let weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

    static let defaultSameActionWindow = 300.0
    static let defaultTrendCalls = 10
    /// `avg_<measure>_<N><unit>` averages over the trailing 24 hours, so a bucket may not be longer.
    static let averageSpan = 86_400.0

    /// The measures, longest name first, so that `input_tokens_task` is not read as `tokens`
    /// and `error_rate_run` not as `errors`.
    private static let measuresByLength = MetricMeasure.allCases.sorted { $0.rawValue.count > $1.rawValue.count }

    /// Resolves an identifier, or returns an error that names it and suggests what to write instead.
    static func resolve(_ name: String, namedLists: [String: ExpressionValue]) -> Result<ResolvedName, NameError> {
        if let kind = variables[name] {
            return .success(.variable(name, kind))
        }
        if name.hasPrefix("context.") {
            let key = name.dropFirst("context.".count)
            let valid = !key.isEmpty && key.unicodeScalars.allSatisfy { $0 == "_" || $0 == "-" || isASCIILetterOrDigit($0) }
            guard valid else {
                return .failure(NameError("invalid context key in '\(name)'; a key contains only letters, digits, '_' and '-', as in context.region"))
            }
            return .success(.variable(name, .unknown))
        }
        if let metric = fixedMetrics[name] {
            return .success(.metric(metric))
        }
        switch name {
        case "same_action_count": return .success(.windowable(.sameActionCount))
        case "tokens_per_call_trend": return .success(.windowable(.tokensPerCallTrend))
        default: break
        }
        if let measure = MetricMeasure(rawValue: name) {
            return .success(.windowable(.measure(measure)))
        }
        if let result = resolveAverage(name) {
            return result
        }
        if let result = resolveMeasureWindow(name) {
            return result
        }
        if let list = namedLists[name] {
            return .success(.namedList(list))
        }
        return .failure(unknownNameError(name, namedLists: namedLists))
    }

    /// Resolves `avg_<measure>_<N><unit>`, or returns nil when the name does not start with `avg_<measure>_`.
    private static func resolveAverage(_ name: String) -> Result<ResolvedName, NameError>? {
        guard name.hasPrefix("avg_") else { return nil }
        let rest = name.dropFirst("avg_".count)
        guard let measure = measuresByLength.first(where: { rest.hasPrefix($0.rawValue + "_") }) else { return nil }
        let bucket = String(rest.dropFirst(measure.rawValue.count + 1))

        switch duration(bucket) {
        case .success(let seconds) where seconds > averageSpan:
            return .failure(NameError(
                "the bucket of '\(name)' is longer than the 24 hours it averages over; use a bucket of at most 24h, as in avg_\(measure.rawValue)_1h"))
        case .success(let seconds):
            return .success(.metric(.average(measure, bucketSeconds: seconds)))
        case .failure(let problem):
            return .failure(NameError(
                "invalid bucket '\(bucket)' in '\(name)': \(problem.message); write avg_\(measure.rawValue)_<N><unit>, as in avg_\(measure.rawValue)_1h"))
        }
    }

    /// Resolves `<measure>_<window>`, or returns nil when the name does not start with a measure.
    private static func resolveMeasureWindow(_ name: String) -> Result<ResolvedName, NameError>? {
        guard let measure = measuresByLength.first(where: { name.hasPrefix($0.rawValue + "_") }) else { return nil }
        let window = String(name.dropFirst(measure.rawValue.count + 1))

        switch window {
        case "last_minute": return .success(.metric(.measure(measure, .seconds(60))))
        case "last_hour": return .success(.metric(.measure(measure, .seconds(3600))))
        case "last_day": return .success(.metric(.measure(measure, .seconds(86_400))))
        case "today": return .success(.metric(.measure(measure, .today)))
        case "task": return .success(.metric(.measure(measure, .task)))
        case "run": return .success(.metric(.measure(measure, .run)))
        default: break
        }

        let windowHelp = "write \(measure.rawValue)_last_minute, _last_hour, _last_<N><unit> (as in _last_5min), _today, _task or _run"
        guard window.hasPrefix("last_") else {
            if let completion = completion(of: name) {
                return .failure(NameError("unknown identifier '\(name)' (did you mean '\(completion)'?)"))
            }
            // `errors_lst_hour`: a misspelled window after a valid measure.
            let candidates = ["last_minute", "last_hour", "last_day", "today", "task", "run"]
            if let suggestion = closestMatch(to: window, among: candidates) {
                return .failure(NameError("unknown identifier '\(name)' (did you mean '\(measure.rawValue)_\(suggestion)'?)"))
            }
            return .failure(NameError("invalid window '\(window)' in '\(name)'; \(windowHelp)"))
        }
        let span = String(window.dropFirst("last_".count))
        switch duration(span) {
        case .success(let seconds):
            return .success(.metric(.measure(measure, .seconds(seconds))))
        case .failure(let problem):
            return .failure(NameError("invalid window '\(window)' in '\(name)': \(problem.message); \(windowHelp)"))
        }
    }

    /// Reads `<N><unit>` or `<N>_<unit>` with a whole N of at least 1.
    private static func duration(_ text: String) -> Result<Double, NameError> {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        var unit = text.dropFirst(digits.count)
        if unit.hasPrefix("_") { unit = unit.dropFirst() }

        guard !digits.isEmpty, let count = Int(digits) else {
            return .failure(NameError("it must start with a whole number"))
        }
        guard let unitSeconds = TimeUnit.seconds(of: String(unit)), String(unit) == String(unit).lowercased() else {
            if unit.isEmpty {
                return .failure(NameError("the unit after \(digits) is missing"))
            }
            if let suggestion = closestMatch(to: String(unit), among: TimeUnit.names) {
                return .failure(NameError("unknown unit '\(unit)' (did you mean '\(suggestion)'?)"))
            }
            return .failure(NameError("unknown unit '\(unit)'; units are s, min, h and d"))
        }
        guard count >= 1 else {
            return .failure(NameError("a window of 0 covers nothing"))
        }
        return .success(Double(count) * unitSeconds)
    }

    private static func unknownNameError(_ name: String, namedLists: [String: ExpressionValue]) -> NameError {
        let metricExamples = MetricMeasure.allCases.flatMap { measure in
            ["last_minute", "last_hour", "today", "task", "run"].map { "\(measure.rawValue)_\($0)" }
        }
        var candidates = Array(variables.keys) + Array(fixedMetrics.keys) + metricExamples
        candidates += ["same_action_count", "tokens_per_call_trend"] + MetricMeasure.allCases.map(\.rawValue)
        candidates += namedLists.keys.sorted()

        if let suggestion = completion(of: name) ?? closestMatch(to: name, among: candidates.sorted()) {
            return NameError("unknown identifier '\(name)' (did you mean '\(suggestion)'?)")
        }
        var message = "unknown identifier '\(name)'; write a variable (time.hour, request.model, agent.tags, context.<key>, ...)"
        message += ", a metric (cost_last_hour, calls_today, avg_cost_1h, errors in last 5 minutes, ...)"
        if namedLists.isEmpty {
            message += ", or a quoted string such as '\(name)'"
        } else {
            message += ", a named list (\(namedLists.keys.sorted().joined(separator: ", "))), or a quoted string such as '\(name)'"
        }
        return NameError(message)
    }

    /// Returns an error message when `literal` can never equal `variable`, because the variable's
    /// values come from a fixed set (weekdays, trust tiers) or have a fixed format (dates).
    static func checkLiteral(_ literal: String, for variable: String) -> String? {
        switch variable {
        case "time.weekday":
            if weekdays.contains(literal) { return nil }
            var message = "'\(literal)' is not a value of time.weekday, which is one of \(weekdays.joined(separator: ", "))"
            if let suggestion = weekdays.first(where: { literal.lowercased().hasPrefix($0) }) {
                message += " (did you mean '\(suggestion)'?)"
            }
            return message
        case "agent.trust_tier":
            if trustTiers.contains(literal) { return nil }
            var message = "'\(literal)' is not a trust tier; tiers are \(trustTiers.joined(separator: " < "))"
            if let suggestion = closestMatch(to: literal, among: trustTiers) {
                message += " (did you mean '\(suggestion)'?)"
            }
            return message
        case "time.date":
            let scalars = Array(literal.unicodeScalars)
            let isDate = scalars.count == 10 && scalars.indices.allSatisfy { index in
                index == 4 || index == 7 ? scalars[index] == "-" : (scalars[index] >= "0" && scalars[index] <= "9")
            }
            if isDate { return nil }
            return "'\(literal)' is not a date in the form of time.date; write YYYY-MM-DD, as in '2025-01-31'"
        default:
            return nil
        }
    }

    /// Returns the fixed metric name that starts with `name`, for a name cut short such as `tokens_per_call`.
    private static func completion(of name: String) -> String? {
        guard name.count >= 4 else { return nil }
        let names = fixedMetrics.keys.sorted() + ["same_action_count", "tokens_per_call_trend"]
        return names.first { $0.hasPrefix(name) && $0 != name }
    }

    private static func isASCIILetterOrDigit(_ scalar: Unicode.Scalar) -> Bool {
        (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || (scalar >= "0" && scalar <= "9")
    }
}

/// A message about a name, located by the parser.
struct NameError: Error {
    var message: String

    init(_ message: String) {
        self.message = message
    }
}
