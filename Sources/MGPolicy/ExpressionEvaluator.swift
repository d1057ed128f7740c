/// Evaluation of a parsed condition. A missing value never equals, orders or belongs to anything,
/// arithmetic on it or on a non-number gives missing, and a logical operator treats every value
/// other than `.bool(true)` as false.
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
            return .bool(operand.evaluate(environment) != .bool(true))
        case .and(let operands):
            for operand in operands where operand.evaluate(environment) != .bool(true) {
                return .bool(false)
            }
            return .bool(true)
        case .or(let operands):
            for operand in operands where operand.evaluate(environment) == .bool(true) {
                return .bool(true)
            }
            return .bool(false)

        case .comparison(let comparison, let left, let right):
            return .bool(Self.compare(left.evaluate(environment), comparison, right.evaluate(environment)))
        case .membership(let element, let container, let negated):
            let found = Self.contains(container.evaluate(environment), element.evaluate(environment))
            return .bool(found != negated)

        case .negate(let operand):
            guard case .number(let number) = operand.evaluate(environment) else { return .missing }
            return .number(-number)
        case .arithmetic(let arithmetic, let left, let right):
            guard case .number(let lhs) = left.evaluate(environment),
                  case .number(let rhs) = right.evaluate(environment)
            else { return .missing }
            switch arithmetic {
            case .plus: return .number(lhs + rhs)
            case .minus: return .number(lhs - rhs)
            case .times: return .number(lhs * rhs)
            case .divide: return rhs == 0 ? .missing : .number(lhs / rhs)
            }
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
