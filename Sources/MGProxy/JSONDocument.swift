import Foundation

/// JSON text walked in place: it validates the syntax and finds where values
/// start and end, without building dictionaries. The proxy reads the few
/// fields it meters this way and edits the body by splicing bytes, because
/// Foundation's parser was a large share of the per-call cost.
struct JSONDocument {
    let bytes: [UInt8]
    /// Set when a walk met an object key with an escape at any depth. Such a key
    /// reads differently as bytes than as text, so callers normalise the document.
    private let walk = WalkFlags()

    private final class WalkFlags {
        var escapedKey = false
    }

    /// Nesting deeper than this is rejected, so hostile input cannot exhaust the stack.
    static let maxDepth = 256

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    func skipSpace(_ start: Int) -> Int {
        var index = start
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 {
            index += 1
        }
        return index
    }

    /// Returns the end (exclusive) of the value at `start`, which must not be white space, or nil when it is malformed.
    func valueEnd(from start: Int, depth: Int = 0) -> Int? {
        guard start < bytes.count, depth < JSONDocument.maxDepth else { return nil }
        switch bytes[start] {
        case UInt8(ascii: "{"):
            return forEachMember(ofObjectAt: start, depth: depth) { _, _ in }
        case UInt8(ascii: "["):
            return forEachElement(ofArrayAt: start, depth: depth) { _ in }
        case UInt8(ascii: "\""):
            return stringEnd(from: start)
        case UInt8(ascii: "t"):
            return literalEnd("true", from: start)
        case UInt8(ascii: "f"):
            return literalEnd("false", from: start)
        case UInt8(ascii: "n"):
            return literalEnd("null", from: start)
        default:
            return numberEnd(from: start)
        }
    }

    /// Calls `body` with the key range (inside the quotes) and value range of
    /// each member in order. Returns the end of the object, or nil when malformed.
    @discardableResult
    func forEachMember(ofObjectAt start: Int, depth: Int = 0, _ body: (Range<Int>, Range<Int>) -> Void) -> Int? {
        guard start < bytes.count, bytes[start] == UInt8(ascii: "{"), depth < JSONDocument.maxDepth else { return nil }
        var index = skipSpace(start + 1)
        if index < bytes.count && bytes[index] == UInt8(ascii: "}") { return index + 1 }
        while true {
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\""), let keyEnd = stringEnd(from: index) else { return nil }
            let key = (index + 1)..<(keyEnd - 1)
            if bytes[key].contains(UInt8(ascii: "\\")) { walk.escapedKey = true }
            index = skipSpace(keyEnd)
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            let valueStart = skipSpace(index + 1)
            guard let valueEnd = valueEnd(from: valueStart, depth: depth + 1) else { return nil }
            body(key, valueStart..<valueEnd)
            index = skipSpace(valueEnd)
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: "}") { return index + 1 }
            guard bytes[index] == UInt8(ascii: ",") else { return nil }
            index = skipSpace(index + 1)
        }
    }

    /// Calls `body` with each element's range; returns the end of the array, or nil when malformed.
    @discardableResult
    func forEachElement(ofArrayAt start: Int, depth: Int = 0, _ body: (Range<Int>) -> Void) -> Int? {
        guard start < bytes.count, bytes[start] == UInt8(ascii: "["), depth < JSONDocument.maxDepth else { return nil }
        var index = skipSpace(start + 1)
        if index < bytes.count && bytes[index] == UInt8(ascii: "]") { return index + 1 }
        while true {
            guard let end = valueEnd(from: index, depth: depth + 1) else { return nil }
            body(index..<end)
            index = skipSpace(end)
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: "]") { return index + 1 }
            guard bytes[index] == UInt8(ascii: ",") else { return nil }
            index = skipSpace(index + 1)
        }
    }

    private func stringEnd(from start: Int) -> Int? {
        var index = start + 1
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") { return index + 1 }
            if byte < 0x20 { return nil }
            index += byte == UInt8(ascii: "\\") ? 2 : 1
        }
        return nil
    }

    private func literalEnd(_ literal: StaticString, from start: Int) -> Int? {
        let count = literal.utf8CodeUnitCount
        guard start + count <= bytes.count else { return nil }
        for offset in 0..<count where bytes[start + offset] != literal.utf8Start[offset] { return nil }
        return start + count
    }

    /// Follows JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
    private func numberEnd(from start: Int) -> Int? {
        var index = start
        func isDigit(_ position: Int) -> Bool { position < bytes.count && bytes[position] >= 0x30 && bytes[position] <= 0x39 }
        func digits() -> Bool {
            guard isDigit(index) else { return false }
            while isDigit(index) { index += 1 }
            return true
        }
        if index < bytes.count && bytes[index] == UInt8(ascii: "-") { index += 1 }
        if index < bytes.count && bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else if !digits() {
            return nil
        }
        if index < bytes.count && bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard digits() else { return nil }
        }
        if index < bytes.count && (bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E")) {
            index += 1
            if index < bytes.count && (bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-")) { index += 1 }
            guard digits() else { return nil }
        }
        return index
    }

    // MARK: - Reading values

    /// Returns the string a member key or string value holds, decoding escapes when there are any.
    func string(_ range: Range<Int>, quoted: Bool = true) -> String? {
        let inner = quoted ? (range.lowerBound + 1)..<(range.upperBound - 1) : range
        guard !quoted || (range.count >= 2 && bytes[range.lowerBound] == UInt8(ascii: "\"")) else { return nil }
        if !bytes[inner].contains(UInt8(ascii: "\\")) {
            return String(decoding: bytes[inner], as: UTF8.self)
        }
        let literal = Array(bytes[(inner.lowerBound - 1)..<(inner.upperBound + 1)])
        return (try? JSONSerialization.jsonObject(with: Data(literal), options: [.fragmentsAllowed])) as? String
    }

    func isLiteral(_ range: Range<Int>, _ literal: String) -> Bool {
        bytes[range].elementsEqual(literal.utf8)
    }

    /// Returns a whole number, also written with a zero fraction such as 16.0; nil for anything else.
    func integer(_ range: Range<Int>) -> Int? {
        if let value = JSONScan.integer(bytes[range]) { return value }
        guard let value = Double(String(decoding: bytes[range], as: UTF8.self)), value == value.rounded(), abs(value) < 1e15 else { return nil }
        return Int(value)
    }

    /// Returns the top-level members by key, and whether any top-level key
    /// repeats or any key at any depth has an escape.
    func topLevelMembers() -> (members: [String: Range<Int>], irregularKeys: Bool)? {
        let start = skipSpace(0)
        var members: [String: Range<Int>] = [:]
        var repeated = false
        walk.escapedKey = false
        guard let end = forEachMember(ofObjectAt: start, { key, value in
            let name = String(decoding: bytes[key], as: UTF8.self)
            if members.updateValue(value, forKey: name) != nil { repeated = true }
        }), skipSpace(end) == bytes.count else { return nil }
        return (members, repeated || walk.escapedKey)
    }
}
