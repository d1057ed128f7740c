/// Evaluation of a parsed condition, in three-valued logic so that a missing value fails closed.
/// A comparison or membership test with a missing side, and arithmetic on a missing value or a
/// non-number, give missing. AND is false if any side is false, OR is true if any side is true,
/// and otherwise a missing side makes them missing; NOT of missing is missing. The governor lets an
/// allow rule apply only on true and a deny rule apply unless false.
extension ExpressionNode {
    func evaluate<Environment: ExpressionEnvironment>(_ environment: Environment) -> ExpressionValue {
        switch self {
        case .constant(let value):
            return value
        case .variable(let name):
            return environment.variable(name)
        case .metric(let metric):
            let number = environment.metric(metric)
            return number.isNaN ? .missing : .number(number)
        case .list(let items):
            return .list(items.map { $0.evaluate(environment) })

        case .not(let operand):
            switch operand.evaluate(environment) {
            case .bool(let value): return .bool(!value)
            default: return .missing
            }
        case .and(let operands):
            var unknown = false
            for operand in operands {
                switch operand.evaluate(environment) {
                case .bool(false): return .bool(false)
                case .bool(true): continue
                default: unknown = true
                }
            }
            return unknown ? .missing : .bool(true)
        case .or(let operands):
            var unknown = false
            for operand in operands {
                switch operand.evaluate(environment) {
                case .bool(true): return .bool(true)
                case .bool(false): continue
                default: unknown = true
                }
            }
            return unknown ? .missing : .bool(false)

        case .comparison(let comparison, let left, let right):
            let (lhs, rhs) = (left.evaluate(environment), right.evaluate(environment))
            if lhs == .missing || rhs == .missing { return .missing }
            // Ordering a number against a string (a context value such as "abc") is unknown, not false.
            if comparison != .equal && comparison != .notEqual && !Self.orderable(lhs, rhs) { return .missing }
            return .bool(Self.compare(lhs, comparison, rhs))
        case .membership(let element, let container, let negated):
            let (item, list) = (element.evaluate(environment), container.evaluate(environment))
            if item == .missing || list == .missing { return .missing }
            return .bool(Self.contains(list, item) != negated)

        case .negate(let operand):
            guard case .number(let number) = operand.evaluate(environment) else { return .missing }
            return .number(-number)
        case .arithmetic(let arithmetic, let left, let right):
            guard case .number(let lhs) = left.evaluate(environment),
                  case .number(let rhs) = right.evaluate(environment)
            else { return .missing }
            let result: Double
            switch arithmetic {
            case .plus: result = lhs + rhs
            case .minus: result = lhs - rhs
            case .times: result = lhs * rhs
            case .divide: result = rhs == 0 ? .nan : lhs / rhs
            }
            // Division by zero and overflow have no meaningful value.
            return result.isFinite ? .number(result) : .missing
        }
    }

    /// The rank of each trust tier. Two strings that are both tiers order by tier, not alphabetically.
    private static let trustTierRanks = Dictionary(
        uniqueKeysWithValues: ExpressionNames.trustTiers.enumerated().map { ($0.element, $0.offset) })

    /// Compares two values. Missing is unequal to everything, including missing. A number and a string
    /// are unequal and unordered, and bools and lists only compare for equality.
    static func compare(_ left: ExpressionValue, _ comparison: ComparisonOperator, _ right: ExpressionValue) -> Bool {
        switch (left, right) {
        case (.missing, _), (_, .missing):
            return comparison == .notEqual
        case (.number(let lhs), .number(let rhs)):
            return order(lhs, comparison, rhs)
        case (.string(let lhs), .string(let rhs)):
            if let leftRank = trustTierRanks[lhs], let rightRank = trustTierRanks[rhs] {
                return order(leftRank, comparison, rightRank)
            }
            return order(lhs, comparison, rhs)
        default:
            switch comparison {
            case .equal: return left == right
            case .notEqual: return left != right
            case .less, .lessOrEqual, .greater, .greaterOrEqual: return false
            }
        }
    }

    /// Returns whether two values can be ordered: two numbers, or two strings.
    static func orderable(_ left: ExpressionValue, _ right: ExpressionValue) -> Bool {
        switch (left, right) {
        case (.number, .number), (.string, .string): return true
        default: return false
        }
    }

    private static func order<Value: Comparable>(_ lhs: Value, _ comparison: ComparisonOperator, _ rhs: Value) -> Bool {
        switch comparison {
        case .equal: lhs == rhs
        case .notEqual: lhs != rhs
        case .less: lhs < rhs
        case .lessOrEqual: lhs <= rhs
        case .greater: lhs > rhs
        case .greaterOrEqual: lhs >= rhs
        }
    }

    /// Tests membership in a list (by `==`), or a substring when both sides are strings.
    static func contains(_ container: ExpressionValue, _ element: ExpressionValue) -> Bool {
        switch (element, container) {
        case (.missing, _), (_, .missing):
            return false
        case (_, .list(let items)):
            return items.contains { compare(element, .equal, $0) }
        case (.string(let needle), .string(let haystack)):
            return needle.isEmpty || haystack.contains(needle)
        default:
            return false
        }
    }
}
