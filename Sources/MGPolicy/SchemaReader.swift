import Foundation

/// Reads typed values out of YAML nodes and collects every error it finds, with
/// position and key path, instead of stopping at the first.
struct SchemaReader {
    var errors: [PolicyError] = []

    /// The errors in the order they appear in the file.
    var sortedErrors: [PolicyError] {
        errors.sorted { ($0.position.line, $0.position.column) < ($1.position.line, $1.position.column) }
    }

    mutating func fail(_ node: YAMLNode, _ path: String, _ message: String) {
        errors.append(PolicyError(position: node.position, path: path, message: message))
    }

    /// Reads a list of condition expressions (or one expression) and parses each against the policy's named lists.
    mutating func conditions(_ node: YAMLNode, path: String, namedLists: [String: ExpressionValue]) -> [Condition] {
        let items: [(YAMLNode, String)]
        if node.scalarText != nil {
            items = [(node, path)]
        } else if let list = sequence(node, path: path) {
            items = list.enumerated().map { ($1, "\(path)[\($0)]") }
        } else {
            return []
        }
        var result: [Condition] = []
        for (item, itemPath) in items {
            guard case .scalar(let text, let plain) = item.value else {
                fail(item, itemPath, "expected an expression string such as \"cost_today < 5\", got \(item.kindName)")
                continue
            }
            do {
                result.append(try ConditionParser.parse(text, position: item.position, namedLists: namedLists, quoted: !plain))
            } catch {
                errors.append(PolicyError(position: error.position, path: itemPath, message: error.message))
            }
        }
        return result
    }

    /// Returns the mapping's supported keys and their values. Reports a node that
    /// is not a mapping, duplicate keys, keys that POLICY's format defines but
    /// this version does not enforce, and unknown keys with a suggestion.
    mutating func mapping(
        _ node: YAMLNode, path: String, supported: [String], notSupportedYet: [String] = [],
        allowUnknown: (String, YAMLNode) -> Bool = { _, _ in false }
    ) -> [String: YAMLNode]? {
        guard case .mapping(let pairs) = node.value else {
            if case .scalar(let text, true) = node.value, text.isEmpty || text == "~" || text == "null" {
                return [:]  // `key:` with nothing after it is an empty section
            }
            fail(node, path, "expected a mapping, got \(node.kindName)")
            return nil
        }
        var result: [String: YAMLNode] = [:]
        var firstLine: [String: Int] = [:]
        for (keyNode, valueNode) in pairs {
            guard let key = keyNode.scalarText else {
                fail(keyNode, path, "keys must be plain strings, got \(keyNode.kindName)")
                continue
            }
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            if let line = firstLine[key] {
                fail(keyNode, path.isEmpty ? key : path, "duplicate key '\(key)' (first at line \(line)); remove one of them")
                continue
            }
            firstLine[key] = keyNode.position.line
            if supported.contains(key) {
                result[key] = valueNode
            } else if notSupportedYet.contains(key) {
                fail(keyNode, keyPath, "is not supported yet by this version of mg-run; remove it, because a limit that is not enforced would be silently ignored")
            } else if allowUnknown(key, valueNode) {
                result[key] = valueNode
            } else {
                var message = "unknown key '\(key)'"
                if path.hasPrefix("rules["), !path.contains("."), PolicyLoader.supportedRateLimitKeys.contains(key) {
                    message += "; it belongs under rate_limit: (\(path).rate_limit.\(key))"
                } else if let suggestion = closestMatch(to: key, among: supported + notSupportedYet) {
                    message += " (did you mean '\(suggestion)'?)"
                } else {
                    message += "; valid keys here: \(supported.joined(separator: ", "))"
                }
                fail(keyNode, path.isEmpty ? key : path, message)
            }
        }
        return result
    }

    mutating func sequence(_ node: YAMLNode, path: String) -> [YAMLNode]? {
        guard case .sequence(let items) = node.value else {
            fail(node, path, "expected a list, got \(node.kindName)")
            return nil
        }
        return items
    }

    mutating func string(_ node: YAMLNode, path: String) -> String? {
        guard case .scalar(let text, _) = node.value else {
            fail(node, path, "expected a string, got \(node.kindName)")
            return nil
        }
        return text
    }

    /// Reads a list of strings; each item that is not a string is an error of its own.
    mutating func strings(_ node: YAMLNode, path: String) -> [String]? {
        guard let items = sequence(node, path: path) else { return nil }
        var result: [String] = []
        for (index, item) in items.enumerated() {
            if let text = string(item, path: "\(path)[\(index)]") { result.append(text) }
        }
        return result
    }

    /// Reads a non-negative whole number written as a plain YAML integer.
    mutating func count(_ node: YAMLNode, path: String) -> Int? {
        guard case .scalar(let text, let plain) = node.value else {
            fail(node, path, "expected a non-negative whole number, got \(node.kindName)")
            return nil
        }
        guard plain else {
            fail(node, path, "expected a non-negative whole number, got \(node.kindName); remove the quotes")
            return nil
        }
        let digits = text.hasPrefix("+") ? String(text.dropFirst()) : text
        if let value = Int(digits), value >= 0, !digits.isEmpty, digits.allSatisfy(\.isASCII) {
            return value
        }
        if text.hasPrefix("-") {
            fail(node, path, "must not be negative, got \(text)")
        } else if Double(text) != nil {
            fail(node, path, "expected a whole number, got \(text)")
        } else {
            fail(node, path, "expected a non-negative whole number, got \(node.kindName)")
        }
        return nil
    }

    /// Reads a non-negative amount of dollars written as a plain YAML number.
    mutating func dollars(_ node: YAMLNode, path: String) -> USD? {
        guard case .scalar(let text, let plain) = node.value, plain else {
            fail(node, path, "expected an amount in US dollars such as 0.50, got \(node.kindName)")
            return nil
        }
        if text.hasPrefix("-") {
            fail(node, path, "must not be negative, got \(text)")
            return nil
        }
        guard let amount = USD(decimalText: text) else {
            fail(node, path, "expected an amount in US dollars such as 0.50, got \(node.kindName)")
            return nil
        }
        return amount
    }

    mutating func boolean(_ node: YAMLNode, path: String) -> Bool? {
        if case .scalar(let text, true) = node.value {
            switch text.lowercased() {
            case "true", "yes", "on": return true
            case "false", "no", "off": return false
            default: break
            }
        }
        fail(node, path, "expected true or false, got \(node.kindName)")
        return nil
    }

    /// Reads one of a fixed set of words, with a suggestion for a misspelling.
    mutating func choice(_ node: YAMLNode, path: String, among choices: [String]) -> String? {
        guard let text = string(node, path: path) else { return nil }
        if choices.contains(text) { return text }
        var message = "invalid value '\(text)'; expected one of \(choices.joined(separator: ", "))"
        if let suggestion = closestMatch(to: text, among: choices) {
            message += " (did you mean '\(suggestion)'?)"
        }
        fail(node, path, message)
        return nil
    }
}

/// Returns the candidate within a small edit distance of `word`, if any.
func closestMatch(to word: String, among candidates: [String]) -> String? {
    let limit = max(2, word.count / 3)
    var best: (candidate: String, distance: Int)?
    for candidate in candidates {
        let distance = editDistance(word.lowercased(), candidate.lowercased())
        if distance <= limit, distance < (best?.distance ?? Int.max) {
            best = (candidate, distance)
        }
    }
    return best?.candidate
}

/// Levenshtein distance over Unicode scalars.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.unicodeScalars)
    let b = Array(b.unicodeScalars)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
            current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
