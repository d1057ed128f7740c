/// A value an expression computes or reads.
public enum ExpressionValue: Sendable, Equatable {
    case number(Double)
    case string(String)
    case bool(Bool)
    case list([ExpressionValue])
    /// A variable the run does not have, a NaN metric, or arithmetic without a numeric result
    /// (a missing or non-number operand, or division by zero).
    case missing
}

extension ExpressionValue: CustomStringConvertible {
    /// The value as a condition would write it, for audit records.
    public var description: String {
        switch self {
        case .number(let number):
            if number.rounded() == number, abs(number) < 1e15 { return String(Int64(number)) }
            return String(number)
        case .string(let text):
            return "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        case .bool(let value):
            return value ? "true" : "false"
        case .list(let items):
            return "[" + items.map(\.description).joined(separator: ", ") + "]"
        case .missing:
            return "missing"
        }
    }
}

extension ExpressionValue {
    /// Converts a YAML scalar of a named list. A plain `true` or `false` (any letter case) is a bool,
    /// a plain decimal number such as `443` or `-0.5` is a number, and everything else is a string.
    /// Other YAML 1.1 booleans (`yes`, `no`, `on`, `off`) stay strings, so a country code `NO` stays `'NO'`.
    public init(yamlScalar text: String, plain: Bool) {
        guard plain else {
            self = .string(text)
            return
        }
        switch text.lowercased() {
        case "true": self = .bool(true)
        case "false": self = .bool(false)
        default: self = Self.isDecimal(text) ? .number(Double(text) ?? 0) : .string(text)
        }
    }

    /// Converts a YAML sequence of scalars into a list, or returns nil for any other node.
    public init?(yamlList node: YAMLNode) {
        guard case .sequence(let items) = node.value else { return nil }
        var values: [ExpressionValue] = []
        for item in items {
            guard case .scalar(let text, let plain) = item.value else { return nil }
            values.append(ExpressionValue(yamlScalar: text, plain: plain))
        }
        self = .list(values)
    }

    /// Returns whether `text` is an optional minus, digits, and an optional fraction, which `Double` always converts.
    private static func isDecimal(_ text: String) -> Bool {
        let unsigned = text.hasPrefix("-") ? text.dropFirst() : Substring(text)
        let parts = unsigned.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        return parts.allSatisfy { part in !part.isEmpty && part.unicodeScalars.allSatisfy { $0 >= "0" && $0 <= "9" } }
    }
}

/// A quantity the governor counts per call, read over a scope.
public enum MetricMeasure: String, Sendable, CaseIterable {
    case cost, calls, tokens
    case inputTokens = "input_tokens"
    case outputTokens = "output_tokens"
    case errors
    case errorRate = "error_rate"
    case denials
}

/// The span of history a metric covers.
public enum MetricScope: Sendable, Hashable {
    /// A trailing window: `last_minute` is 60, `last_hour` 3600, `last_<N><unit>` or the suffix `in last N minutes`.
    case seconds(Double)
    /// Since midnight in the policy timezone.
    case today
    case task
    case run
    /// The newest N calls, from the suffix `over N calls`.
    case calls(Int)
}

/// A number computed from the run's history, such as the spend of the last hour.
public enum Metric: Sendable, Hashable {
    /// `cost_last_hour`, `calls_last_5min`, `errors in last 10 minutes`, `cost over 20 calls`, ...
    case measure(MetricMeasure, MetricScope)
    /// `avg_cost_1h`: the mean of the measure per bucket over the trailing 24 hours.
    case average(MetricMeasure, bucketSeconds: Double)
    /// `cost_today` and `daily_cost`.
    case costToday
    /// The cost of this task so far.
    case currentCost
    /// The mean cost of this agent's finished tasks, from the ledger.
    case averageCost
    /// The length of the current run of identical operations (same action and payload fingerprint).
    case sameActionRepeated
    /// The count of the most frequent fingerprint in the window: 300 s unless a suffix `in last N minutes` sets it.
    case sameActionCount(windowSeconds: Double)
    /// Tokens of the newest call divided by those of the call N calls earlier: 10 unless `over N calls` sets it.
    case tokensPerCallTrend(calls: Int)
}

extension Metric: CustomStringConvertible {
    /// The metric in condition syntax, for audit records and messages.
    public var description: String {
        switch self {
        case .measure(let measure, .seconds(let seconds)):
            return "\(measure.rawValue)_last_\(Self.windowName(seconds))"
        case .measure(let measure, .today):
            return "\(measure.rawValue)_today"
        case .measure(let measure, .task):
            return "\(measure.rawValue)_task"
        case .measure(let measure, .run):
            return "\(measure.rawValue)_run"
        case .measure(let measure, .calls(let count)):
            return "\(measure.rawValue) over \(count) calls"
        case .average(let measure, let bucketSeconds):
            return "avg_\(measure.rawValue)_\(Self.durationName(bucketSeconds))"
        case .costToday:
            return "cost_today"
        case .currentCost:
            return "current_cost"
        case .averageCost:
            return "average_cost"
        case .sameActionRepeated:
            return "same_action_repeated"
        case .sameActionCount(let windowSeconds):
            return "same_action_count in last \(Self.durationName(windowSeconds))"
        case .tokensPerCallTrend(let calls):
            return "tokens_per_call_trend over \(calls) calls"
        }
    }

    private static func windowName(_ seconds: Double) -> String {
        switch seconds {
        case 60: return "minute"
        case 3600: return "hour"
        default: return durationName(seconds)
        }
    }

    /// Writes a duration in the largest unit that divides it exactly: `5min`, `2h`, `90s`.
    private static func durationName(_ seconds: Double) -> String {
        for (unit, size) in [("d", 86_400.0), ("h", 3600.0), ("min", 60.0)] where seconds >= size {
            let count = seconds / size
            if count.rounded() == count { return "\(Int64(count))\(unit)" }
        }
        return "\(ExpressionValue.number(seconds))s"
    }
}

/// The run's state that evaluation reads. The governor implements it.
public protocol ExpressionEnvironment {
    /// Returns the value of a variable such as `time.hour`, `request.model`, `context.region` or `agent.tags`,
    /// or `.missing` when the run has no such value.
    ///
    /// A number never equals a string, so an implementation should return numbers for the
    /// numeric variables (`time.hour`, `request.max_tokens`, `task.calls`, ...). The parser rejects
    /// literals outside these forms: `time.weekday` is `mon` to `sun` in lowercase, `time.date` is
    /// `YYYY-MM-DD`, and `agent.trust_tier` is `untrusted`, `basic`, `verified` or `privileged`.
    func variable(_ name: String) -> ExpressionValue
    /// Returns the metric's current value. NaN, such as an error rate over zero calls, reads as `.missing`.
    func metric(_ metric: Metric) -> Double
}

/// A condition expression, parsed once when the policy loads.
public struct Condition: Sendable {
    public let text: String
    /// The position of the YAML scalar that contains the text.
    public let position: SourcePosition
    /// Every variable the condition reads, such as `request.model` or `context.region`.
    public let variables: Set<String>
    /// Every metric the condition reads, so that the governor keeps the history they need.
    public let metrics: Set<Metric>
    let root: ExpressionNode

    /// Evaluates the condition. Only a result of `.bool(true)` counts as true.
    public func evaluate(_ environment: some ExpressionEnvironment) -> Bool {
        root.evaluate(environment) == .bool(true)
    }

    /// Evaluates the condition failing closed. For a deny rule (`failClosedTrue`), any result other than
    /// false counts as holding, missing values included. For an allow rule only true does.
    public func holds(_ environment: some ExpressionEnvironment, failClosedTrue: Bool) -> Bool {
        let result = root.evaluate(environment)
        return failClosedTrue ? result != .bool(false) : result == .bool(true)
    }

    /// Evaluates the condition and returns what it computed, for audit records.
    public func value(_ environment: some ExpressionEnvironment) -> ExpressionValue {
        root.evaluate(environment)
    }
}

/// A condition that cannot be parsed. The message names the offending token and the fix.
public struct ConditionError: Error, Sendable, CustomStringConvertible {
    /// The position of the offending token when the condition is on one line, otherwise that of the YAML scalar.
    public var position: SourcePosition
    public var message: String

    public init(position: SourcePosition, message: String) {
        self.position = position
        self.message = message
    }

    public var description: String { "\(position): \(message)" }
}

public enum ConditionParser {
    /// Parses a condition and checks every name in it, so that mistakes surface when the policy loads.
    ///
    /// - Parameters:
    ///   - position: The position of the YAML scalar that contains `text`.
    ///   - namedLists: The policy's top-level lists of scalars (such as `allowed_domains`), by name.
    ///   - quoted: Whether the scalar is single- or double-quoted, so that its text starts one column after `position`.
    /// - Throws: `ConditionError` for an unknown name, a syntax error, or an operation that can never be true.
    public static func parse(
        _ text: String, position: SourcePosition, namedLists: [String: ExpressionValue], quoted: Bool = false
    ) throws(ConditionError) -> Condition {
        let locator = ErrorLocator(text: text, position: position, quoted: quoted)
        let tokens = try ExpressionLexer.tokens(of: text, locator: locator)
        var parser = ExpressionParser(text: text, tokens: tokens, namedLists: namedLists, locator: locator)
        let root = try parser.parseCondition()
        return Condition(text: text, position: position, variables: parser.variables, metrics: parser.metrics, root: root)
    }
}

/// Maps an offset in the condition text to a position in the policy file.
struct ErrorLocator {
    let position: SourcePosition
    /// Columns from `position` to the first character of the text, or nil when the text spans several lines.
    let firstColumnOffset: Int?
    /// The offset of the first character of each line, for a condition that spans several lines.
    let lineStarts: [Int]

    init(text: String, position: SourcePosition, quoted: Bool) {
        self.position = position
        var lineStarts = [0]
        for (offset, scalar) in text.unicodeScalars.enumerated() where scalar == "\n" {
            lineStarts.append(offset + 1)
        }
        self.lineStarts = lineStarts
        // NOTE: a block scalar (`|` or `>`) that folds to one line starts on the line after
        // `position`, and escapes in a quoted scalar shift later columns, so columns are then approximate.
        firstColumnOffset = lineStarts.count > 1 ? nil : (quoted ? 1 : 0)
    }

    /// Builds an error located at the token that starts `offset` unicode scalars into the text.
    /// In a condition of several lines, the message ends with the token's line and column within it.
    func error(at offset: Int, _ message: String) -> ConditionError {
        if let firstColumnOffset {
            var located = position
            located.column += firstColumnOffset + offset
            return ConditionError(position: located, message: message)
        }
        let line = lineStarts.lastIndex { $0 <= offset } ?? 0
        let column = offset - lineStarts[line] + 1
        return ConditionError(position: position, message: "\(message) (at line \(line + 1), column \(column) of the condition)")
    }
}
