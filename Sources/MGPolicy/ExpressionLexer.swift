/// One token of a condition, with its place in the text in unicode scalars.
struct Token: Sendable {
    enum Kind: Sendable, Equatable {
        case number(Double)
        case string(String)
        case identifier(String)
        case keyword(Keyword)
        case symbol(Symbol)
        case end
    }

    var kind: Kind
    /// The token as written, for messages.
    var text: String
    var offset: Int
}

/// Words that are operators or literals in any letter case. The lexer also reads `&&`, `||` and `!` as `and`, `or` and `not`.
enum Keyword: String, Sendable {
    case and, or, not, `in`, `true`, `false`
}

enum Symbol: String, Sendable {
    case equal = "==", notEqual = "!="
    case less = "<", lessOrEqual = "<="
    case greater = ">", greaterOrEqual = ">="
    case plus = "+", minus = "-", times = "*", divide = "/"
    case leftParenthesis = "(", rightParenthesis = ")"
    case leftBracket = "[", rightBracket = "]"
    case comma = ","
}

enum ExpressionLexer {
    /// Splits a condition into tokens, ending with `.end`.
    static func tokens(of text: String, locator: ErrorLocator) throws(ConditionError) -> [Token] {
        let scalars = Array(text.unicodeScalars)
        var tokens: [Token] = []
        var index = 0

        func slice(_ range: Range<Int>) -> String {
            String(String.UnicodeScalarView(scalars[range]))
        }

        while index < scalars.count {
            let start = index
            let scalar = scalars[index]
            if scalar.properties.isWhitespace {
                index += 1
                continue
            }

            if isDigit(scalar) {
                let token = try number(in: scalars, from: start, locator: locator)
                tokens.append(token.token)
                index = token.end
            } else if scalar == "'" || scalar == "\"" {
                let token = try string(in: scalars, from: start, locator: locator)
                tokens.append(token.token)
                index = token.end
            } else if isLetter(scalar) || scalar == "_" {
                index += 1
                while index < scalars.count, isIdentifierPart(scalars[index]) {
                    index += 1
                }
                // A context key may contain hyphens (`context.cost-center`), so a minus
                // right after such a name needs a space before it.
                if slice(start..<index).hasPrefix("context.") {
                    while index < scalars.count, isIdentifierPart(scalars[index]) || scalars[index] == "-" {
                        index += 1
                    }
                }
                let word = slice(start..<index)
                let kind: Token.Kind = Keyword(rawValue: word.lowercased()).map { .keyword($0) } ?? .identifier(word)
                tokens.append(Token(kind: kind, text: word, offset: start))
            } else {
                let token = try operatorToken(in: scalars, from: start, locator: locator)
                tokens.append(token)
                index = start + token.text.unicodeScalars.count
            }
        }
        tokens.append(Token(kind: .end, text: "", offset: scalars.count))
        return tokens
    }

    /// Reads `12`, `0.5`, or a ratio such as `2x` or `1.5x`. Letters right after a number
    /// must be `x` or a time unit (`5min` in a window suffix).
    private static func number(
        in scalars: [Unicode.Scalar], from start: Int, locator: ErrorLocator
    ) throws(ConditionError) -> (token: Token, end: Int) {
        var index = start
        while index < scalars.count, isDigit(scalars[index]) {
            index += 1
        }
        if index + 1 < scalars.count, scalars[index] == ".", isDigit(scalars[index + 1]) {
            index += 1
            while index < scalars.count, isDigit(scalars[index]) {
                index += 1
            }
        }
        let digits = String(String.UnicodeScalarView(scalars[start..<index]))
        // Digits with at most one dot always convert.
        let value = Double(digits) ?? 0

        var letterEnd = index
        while letterEnd < scalars.count, isIdentifierPart(scalars[letterEnd]) {
            letterEnd += 1
        }
        let letters = String(String.UnicodeScalarView(scalars[index..<letterEnd]))
        if letters == "x" || letters == "X" {
            return (Token(kind: .number(value), text: digits + letters, offset: start), letterEnd)
        }
        if !letters.isEmpty, TimeUnit.seconds(of: letters) == nil {
            throw locator.error(
                at: start, "invalid number '\(digits + letters)'; write a number such as 5 or 2.5, or a ratio such as 2x")
        }
        return (Token(kind: .number(value), text: digits, offset: start), index)
    }

    /// Reads a string in single or double quotes. A backslash escapes the quote or another
    /// backslash and is kept as written before any other character, so `'C:\tmp'` needs no doubling.
    private static func string(
        in scalars: [Unicode.Scalar], from start: Int, locator: ErrorLocator
    ) throws(ConditionError) -> (token: Token, end: Int) {
        let quote = scalars[start]
        var value = String.UnicodeScalarView()
        var index = start + 1
        while index < scalars.count {
            let scalar = scalars[index]
            if scalar == quote {
                let text = String(String.UnicodeScalarView(scalars[start...index]))
                return (Token(kind: .string(String(value)), text: text, offset: start), index + 1)
            }
            if scalar == "\\", index + 1 < scalars.count, scalars[index + 1] == quote || scalars[index + 1] == "\\" {
                value.append(scalars[index + 1])
                index += 2
                continue
            }
            value.append(scalar)
            index += 1
        }
        throw locator.error(at: start, "unterminated string starting with \(quote); add the closing \(quote)")
    }

    private static func operatorToken(
        in scalars: [Unicode.Scalar], from start: Int, locator: ErrorLocator
    ) throws(ConditionError) -> Token {
        let first = scalars[start]
        let second = start + 1 < scalars.count ? scalars[start + 1] : nil
        let pair = second.map { String(first) + String($0) } ?? ""

        switch pair {
        case "&&": return Token(kind: .keyword(.and), text: pair, offset: start)
        case "||": return Token(kind: .keyword(.or), text: pair, offset: start)
        default: break
        }
        if let symbol = Symbol(rawValue: pair) {
            return Token(kind: .symbol(symbol), text: pair, offset: start)
        }
        if first == "!" {
            return Token(kind: .keyword(.not), text: "!", offset: start)
        }
        if let symbol = Symbol(rawValue: String(first)) {
            return Token(kind: .symbol(symbol), text: String(first), offset: start)
        }

        let hint: String
        switch first {
        case "=": hint = "; write '==' to compare"
        case "&": hint = "; write '&&' or AND"
        case "|": hint = "; write '||' or OR"
        case "`", "\u{2018}", "\u{2019}", "\u{201C}", "\u{201D}": hint = "; quote strings with ' or \""
        default: hint = "; conditions use names, numbers, quoted strings and the operators AND OR NOT == != < <= > >= in + - * /"
        }
        throw locator.error(at: start, "invalid character '\(first)'\(hint)")
    }

    private static func isDigit(_ scalar: Unicode.Scalar) -> Bool {
        scalar >= "0" && scalar <= "9"
    }

    private static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z")
    }

    private static func isIdentifierPart(_ scalar: Unicode.Scalar) -> Bool {
        isLetter(scalar) || isDigit(scalar) || scalar == "_" || scalar == "."
    }
}
