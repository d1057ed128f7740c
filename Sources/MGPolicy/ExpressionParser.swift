/// The tree of a parsed condition, built once at load time and walked on every evaluation.
indirect enum ExpressionNode: Sendable {
    case constant(ExpressionValue)
    case variable(String)
    case metric(Metric)
    /// A list literal with at least one element that is not a constant; constant lists fold into `.constant`.
    case list([ExpressionNode])
    case not(ExpressionNode)
    case negate(ExpressionNode)
    case and([ExpressionNode])
    case or([ExpressionNode])
    case comparison(ComparisonOperator, ExpressionNode, ExpressionNode)
    case membership(ExpressionNode, ExpressionNode, negated: Bool)
    case arithmetic(ArithmeticOperator, ExpressionNode, ExpressionNode)
}

enum ComparisonOperator: String, Sendable {
    case equal = "==", notEqual = "!="
    case less = "<", lessOrEqual = "<="
    case greater = ">", greaterOrEqual = ">="

    var isOrdering: Bool { self != .equal && self != .notEqual }
}

enum ArithmeticOperator: String, Sendable {
    case plus = "+", minus = "-", times = "*", divide = "/"
}

/// A recursive-descent parser over the token list. Precedence, lowest first: OR, AND, NOT,
/// comparison and `in`, `+ -`, `* /`, unary minus, then a value with its window suffix.
struct ExpressionParser {
    /// The deepest nesting of parentheses, operators and lists a condition may have. It bounds the
    /// recursion of parsing and of every evaluation.
    static let maximumDepth = 128

    private let scalars: [Unicode.Scalar]
    private let tokens: [Token]
    let namedLists: [String: ExpressionValue]
    let locator: ErrorLocator
    private var index = 0
    private var nesting = 0
    var variables: Set<String> = []
    var metrics: Set<Metric> = []

    /// A parsed subexpression with the static kind, tree depth and text span that the checks need.
    struct Operand {
        var node: ExpressionNode
        var kind: ValueKind
        var depth: Int
        var start: Int
        var end: Int
    }

    init(text: String, tokens: [Token], namedLists: [String: ExpressionValue], locator: ErrorLocator) {
        self.scalars = Array(text.unicodeScalars)
        self.tokens = tokens
        self.namedLists = namedLists
        self.locator = locator
    }

    mutating func parseCondition() throws(ConditionError) -> ExpressionNode {
        if case .end = current.kind {
            throw locator.error(at: 0, "empty condition; write an expression such as cost_today > 5")
        }
        let operand = try parseOr()

        switch current.kind {
        case .end:
            break
        case .symbol(.rightParenthesis):
            throw locator.error(at: current.offset, "unbalanced parentheses: ')' has no matching '('; remove it or add '(' before it")
        default:
            throw locator.error(
                at: current.offset,
                "unexpected \(current.quotedText) after \(quoted(operand)); join the two with AND or OR, or remove \(current.quotedText)")
        }
        if [.number, .string, .list].contains(operand.kind) {
            throw locator.error(
                at: operand.start, "the condition computes \(operand.kind.name), not true or false; \(booleanHint(for: operand))")
        }
        return operand.node
    }

    // MARK: Logical operators

    private mutating func parseOr() throws(ConditionError) -> Operand {
        let first = try parseAnd()
        guard case .keyword(.or) = current.kind else { return first }

        var items = [first]
        while case .keyword(.or) = current.kind {
            let op = advance()
            items.append(try parseAnd())
            try checkLogical(op, items[items.count - 2], items[items.count - 1])
        }
        return try combine(.or(items.map(\.node)), kind: .bool, items)
    }

    private mutating func parseAnd() throws(ConditionError) -> Operand {
        let first = try parseNot()
        guard case .keyword(.and) = current.kind else { return first }

        var items = [first]
        while case .keyword(.and) = current.kind {
            let op = advance()
            items.append(try parseNot())
            try checkLogical(op, items[items.count - 2], items[items.count - 1])
        }
        return try combine(.and(items.map(\.node)), kind: .bool, items)
    }

    private mutating func parseNot() throws(ConditionError) -> Operand {
        guard case .keyword(.not) = current.kind else { return try parseComparison() }

        let op = advance()
        try enterNesting(at: op)
        let operand = try parseNot()
        nesting -= 1
        try checkLogical(op, operand)
        var result = try combine(.not(operand.node), kind: .bool, [operand])
        result.start = op.offset
        return result
    }

    private func checkLogical(_ op: Token, _ operands: Operand...) throws(ConditionError) {
        for operand in operands where [.number, .string, .list].contains(operand.kind) {
            throw locator.error(
                at: operand.start,
                "'\(op.text)' needs true or false, but \(quoted(operand)) is \(operand.kind.name); \(booleanHint(for: operand))")
        }
    }

    // MARK: Comparison and membership

    private enum Relation {
        case comparison(ComparisonOperator)
        case membership(negated: Bool)
    }

    private mutating func parseComparison() throws(ConditionError) -> Operand {
        let left = try parseAdditive()
        guard let (relation, op) = takeRelation() else { return left }

        let right = try parseAdditive()
        if let (_, extra) = peekRelation() {
            throw locator.error(
                at: extra.offset,
                "comparisons cannot be chained: '\(extra.text)' follows \(quote("\(text(of: left)) \(op) \(text(of: right))")); join two comparisons with AND")
        }

        switch relation {
        case .comparison(let comparison):
            try checkComparison(comparison, left, right)
            return try combine(.comparison(comparison, left.node, right.node), kind: .bool, [left, right])
        case .membership(let negated):
            try checkMembership(op, left, right)
            return try combine(.membership(left.node, right.node, negated: negated), kind: .bool, [left, right])
        }
    }

    /// Returns the comparison or membership operator at the current token, with its text, without consuming it.
    private func peekRelation() -> (Relation, Token)? {
        switch current.kind {
        case .symbol(let symbol):
            guard let comparison = ComparisonOperator(rawValue: symbol.rawValue) else { return nil }
            return (.comparison(comparison), current)
        case .keyword(.in):
            return (.membership(negated: false), current)
        case .keyword(.not):
            guard case .keyword(.in) = token(after: 1).kind else { return nil }
            var combined = current
            combined.text = "\(current.text) \(token(after: 1).text)"
            return (.membership(negated: true), combined)
        default:
            return nil
        }
    }

    private mutating func takeRelation() -> (Relation, String)? {
        guard let (relation, op) = peekRelation() else { return nil }
        advance()
        if case .membership(negated: true) = relation { advance() }
        return (relation, op.text)
    }

    private func checkComparison(_ comparison: ComparisonOperator, _ left: Operand, _ right: Operand) throws(ConditionError) {
        if comparison.isOrdering {
            for operand in [left, right] where operand.kind == .bool || operand.kind == .list {
                throw locator.error(
                    at: operand.start,
                    "'\(comparison.rawValue)' orders numbers or strings, but \(quoted(operand)) is \(operand.kind.name)")
            }
        }
        try checkLiteral(left, against: right)
        try checkLiteral(right, against: left)
        guard left.kind != .unknown, right.kind != .unknown, left.kind != right.kind else { return }

        let outcome = comparison == .notEqual ? "is always true" : "is never true"
        throw locator.error(
            at: left.start,
            "\(quote("\(text(of: left)) \(comparison.rawValue) \(text(of: right))")) compares \(left.kind.name) with \(right.kind.name), so it \(outcome); write both sides as the same type")
    }

    private func checkMembership(_ op: String, _ left: Operand, _ right: Operand) throws(ConditionError) {
        switch right.kind {
        case .number, .bool:
            throw locator.error(
                at: right.start,
                "'\(op)' needs a list or a string on its right, but \(quoted(right)) is \(right.kind.name); write a list such as ['a', 'b']")
        case .string where left.kind != .string && left.kind != .unknown:
            throw locator.error(
                at: left.start,
                "'\(op)' with a string on its right finds a substring, but \(quoted(left)) is \(left.kind.name); put a list on the right, or a string on the left")
        default:
            break
        }
        if case .constant(.list(let items)) = right.node {
            for case .string(let item) in items {
                try checkLiteral(item, at: right.start, against: left)
            }
        }
    }

    /// Rejects a string constant that the variable on the other side can never equal, such as
    /// `time.weekday == 'Monday'`.
    private func checkLiteral(_ literal: Operand, against other: Operand) throws(ConditionError) {
        guard case .constant(.string(let text)) = literal.node else { return }
        try checkLiteral(text, at: literal.start, against: other)
    }

    private func checkLiteral(_ text: String, at offset: Int, against other: Operand) throws(ConditionError) {
        guard case .variable(let name) = other.node, let message = ExpressionNames.checkLiteral(text, for: name) else { return }
        throw locator.error(at: offset, message)
    }

    // MARK: Arithmetic

    private mutating func parseAdditive() throws(ConditionError) -> Operand {
        var left = try parseMultiplicative()
        while case .symbol(let symbol) = current.kind, symbol == .plus || symbol == .minus {
            let op = advance()
            let right = try parseMultiplicative()
            left = try arithmetic(op, symbol, left, right)
        }
        return left
    }

    private mutating func parseMultiplicative() throws(ConditionError) -> Operand {
        var left = try parseUnary()
        while case .symbol(let symbol) = current.kind, symbol == .times || symbol == .divide {
            let op = advance()
            let right = try parseUnary()
            left = try arithmetic(op, symbol, left, right)
        }
        return left
    }

    private func arithmetic(_ op: Token, _ symbol: Symbol, _ left: Operand, _ right: Operand) throws(ConditionError) -> Operand {
        try checkArithmetic(op, left, right)
        // The callers pass only + - * /, and each of them is an arithmetic operator.
        let arithmeticOperator = ArithmeticOperator(rawValue: symbol.rawValue) ?? .plus
        return try combine(.arithmetic(arithmeticOperator, left.node, right.node), kind: .number, [left, right])
    }

    private func checkArithmetic(_ op: Token, _ operands: Operand...) throws(ConditionError) {
        for operand in operands where [.string, .bool, .list].contains(operand.kind) {
            throw locator.error(
                at: operand.start, "'\(op.text)' needs numbers, but \(quoted(operand)) is \(operand.kind.name)")
        }
    }

    private mutating func parseUnary() throws(ConditionError) -> Operand {
        guard case .symbol(.minus) = current.kind else { return try parsePostfix() }

        let op = advance()
        try enterNesting(at: op)
        let operand = try parseUnary()
        nesting -= 1
        try checkArithmetic(op, operand)

        var result: Operand
        if case .constant(.number(let number)) = operand.node {
            result = operand
            result.node = .constant(.number(-number))
        } else {
            result = try combine(.negate(operand.node), kind: .number, [operand])
        }
        result.start = op.offset
        return result
    }

    // MARK: Values and window suffixes

    private mutating func parsePostfix() throws(ConditionError) -> Operand {
        if case .identifier(let name) = current.kind {
            return try parseName(name)
        }
        let operand = try parsePrimary()
        if let suffix = try parseSuffix(allowMembershipFallback: true) {
            throw locator.error(
                at: suffix.start,
                "a window suffix applies only to a metric, but \(quoted(operand)) is not one; remove '\(suffix.text)'")
        }
        return operand
    }

    private mutating func parsePrimary() throws(ConditionError) -> Operand {
        let token = current
        switch token.kind {
        case .number(let number):
            advance()
            return constant(.number(number), kind: .number, token)
        case .string(let string):
            advance()
            return constant(.string(string), kind: .string, token)
        case .keyword(.true), .keyword(.false):
            advance()
            return constant(.bool(token.kind == .keyword(.true)), kind: .bool, token)
        case .symbol(.leftParenthesis):
            return try parseParenthesized()
        case .symbol(.leftBracket):
            return try parseList()
        default:
            throw missingOperand()
        }
    }

    private mutating func parseParenthesized() throws(ConditionError) -> Operand {
        let open = advance()
        try enterNesting(at: open)
        var inner = try parseOr()
        nesting -= 1

        switch current.kind {
        case .symbol(.rightParenthesis):
            inner.start = open.offset
            inner.end = advance().offset + 1
            return inner
        case .end:
            throw locator.error(
                at: open.offset,
                "unbalanced parentheses: the '(' before \(quoted(inner)) is never closed; add ')' after it")
        default:
            throw locator.error(
                at: current.offset,
                "unexpected \(current.quotedText) after \(quoted(inner)); join the two with AND or OR, or close the '(' with ')'")
        }
    }

    private mutating func parseList() throws(ConditionError) -> Operand {
        let open = advance()
        try enterNesting(at: open)
        defer { nesting -= 1 }

        var items: [Operand] = []
        while true {
            if case .symbol(.rightBracket) = current.kind { break }
            if case .end = current.kind {
                throw locator.error(at: open.offset, "the list that starts with '[' is never closed; add ']' after its last item")
            }
            items.append(try parseOr())
            switch current.kind {
            case .symbol(.comma):
                advance()
            case .symbol(.rightBracket):
                break
            case .end:
                throw locator.error(at: open.offset, "the list that starts with '[' is never closed; add ']' after its last item")
            default:
                throw locator.error(
                    at: current.offset,
                    "unexpected \(current.quotedText) in a list; separate items with ',' and end the list with ']'")
            }
        }
        let close = advance()

        var constants: [ExpressionValue] = []
        for item in items {
            guard case .constant(let value) = item.node else { break }
            constants.append(value)
        }
        var result: Operand
        if constants.count == items.count {
            result = Operand(node: .constant(.list(constants)), kind: .list, depth: 1, start: open.offset, end: close.offset + 1)
        } else {
            result = try combine(.list(items.map(\.node)), kind: .list, items)
        }
        result.start = open.offset
        result.end = close.offset + 1
        return result
    }

    // MARK: Helpers

    var current: Token { tokens[index] }

    func token(after distance: Int) -> Token {
        tokens[min(index + distance, tokens.count - 1)]
    }

    @discardableResult
    mutating func advance() -> Token {
        let token = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return token
    }

    private mutating func enterNesting(at token: Token) throws(ConditionError) {
        nesting += 1
        if nesting > Self.maximumDepth {
            throw locator.error(
                at: token.offset,
                "the condition is nested more than \(Self.maximumDepth) levels deep; split it into several conditions")
        }
    }

    private func constant(_ value: ExpressionValue, kind: ValueKind, _ token: Token) -> Operand {
        Operand(node: .constant(value), kind: kind, depth: 1, start: token.offset,
                end: token.offset + token.text.unicodeScalars.count)
    }

    /// Builds the operand for `node` over `children`, spanning their text, and enforces the depth limit.
    private func combine(_ node: ExpressionNode, kind: ValueKind, _ children: [Operand]) throws(ConditionError) -> Operand {
        let depth = 1 + (children.map(\.depth).max() ?? 0)
        let start = children.map(\.start).min() ?? 0
        let end = children.map(\.end).max() ?? start
        if depth > Self.maximumDepth {
            throw locator.error(
                at: start,
                "the condition is nested more than \(Self.maximumDepth) levels deep; split it into several conditions")
        }
        return Operand(node: node, kind: kind, depth: depth, start: start, end: end)
    }

    /// Builds the error for a place that needs a value but has an operator, a closing bracket or the end.
    private func missingOperand() -> ConditionError {
        let previous = index > 0 ? tokens[index - 1] : nil
        let valueHelp = "write a number, a quoted string, a name or a list"
        if let previous, case .end = current.kind {
            return locator.error(at: previous.offset, "missing operand after '\(previous.text)' at the end of the condition; \(valueHelp) after it")
        }
        if let previous, !previous.isValue {
            return locator.error(at: previous.offset, "missing operand after '\(previous.text)'; \(valueHelp) between '\(previous.text)' and '\(current.text)'")
        }
        return locator.error(at: current.offset, "missing operand before '\(current.text)'; \(valueHelp) before it")
    }

    /// Suggests how to turn a number, string or list into a boolean.
    private func booleanHint(for operand: Operand) -> String {
        let written = text(of: operand)
        switch operand.kind {
        case .string: return "compare it, as in \(quote("\(written) == 'value'"))"
        case .list: return "test membership, as in \(quote("'value' in \(written)"))"
        default: return "compare it, as in \(quote("\(written) > 5"))"
        }
    }

    func quoted(_ operand: Operand) -> String {
        quote(text(of: operand))
    }

    func text(of operand: Operand) -> String {
        text(from: operand.start, to: operand.end)
    }

    func text(from start: Int, to end: Int) -> String {
        let clamped = max(start, 0)..<min(max(end, start), scalars.count)
        return String(String.UnicodeScalarView(scalars[clamped]))
    }
}

/// Wraps condition text in single quotes, or in double quotes when it contains a single quote.
func quote(_ text: String) -> String {
    text.contains("'") && !text.contains("\"") ? "\"\(text)\"" : "'\(text)'"
}

extension Token {
    /// Returns whether the token is the contextual word `word` (`last`, `over`, `calls`) in any letter case.
    func isWord(_ word: String) -> Bool {
        if case .identifier(let name) = kind { return name.lowercased() == word }
        return false
    }

    /// The token as written, in single quotes unless it is a quoted string already.
    var quotedText: String {
        if case .string = kind { return text }
        return quote(text)
    }

    /// A Boolean value that is true when the token ends a value, so that what follows it needs an operator first.
    var isValue: Bool {
        switch kind {
        case .number, .string, .identifier, .keyword(.true), .keyword(.false),
             .symbol(.rightParenthesis), .symbol(.rightBracket):
            true
        default:
            false
        }
    }
}
