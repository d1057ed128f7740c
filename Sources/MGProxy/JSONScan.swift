/// Finds members of a JSON object without parsing the rest, so a response
/// with a long completion is not decoded just to read its usage.
enum JSONScan {
    /// Returns the bytes of the value of `key` in the top-level object, or nil
    /// when the key is absent or the text is not an object. Only keys at depth 1
    /// match, and text inside strings (escapes included) is never taken for a key.
    static func topLevelValue(_ key: String, in bytes: [UInt8]) -> ArraySlice<UInt8>? {
        let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
        let target = Array(key.utf8)
        var depth = 0
        var index = 0
        var expectingKey = false
        while index < bytes.count {
            let byte = bytes[index]
            if byte == quote {
                let start = index + 1
                index = start
                while index < bytes.count && bytes[index] != quote {
                    index += bytes[index] == backslash ? 2 : 1
                }
                if depth == 1 && expectingKey && bytes[start..<min(index, bytes.count)].elementsEqual(target) {
                    return valueAfterKey(bytes, from: index + 1)
                }
                expectingKey = false
            } else if byte == UInt8(ascii: "{") {
                depth += 1
                expectingKey = depth == 1
            } else if byte == UInt8(ascii: "[") {
                depth += 1
            } else if byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") {
                depth -= 1
            } else if byte == UInt8(ascii: ",") && depth == 1 {
                expectingKey = true
            }
            index += 1
        }
        return nil
    }

    /// Returns the whole-number members of the top-level object by key. Other
    /// members are skipped, and nested objects named in `nested` contribute
    /// their whole-number members as "outer.inner".
    static func integerMembers(in bytes: [UInt8], nested: Set<String> = []) -> [String: Int] {
        var result: [String: Int] = [:]
        var index = 0
        while index < bytes.count && bytes[index] != UInt8(ascii: "{") { index += 1 }
        index += 1
        while index < bytes.count {
            // Find the next key at this level.
            while index < bytes.count && bytes[index] != UInt8(ascii: "\"") && bytes[index] != UInt8(ascii: "}") { index += 1 }
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { break }
            let keyStart = index + 1
            index = keyStart
            while index < bytes.count && bytes[index] != UInt8(ascii: "\"") {
                index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
            }
            guard index < bytes.count else { break }
            let key = String(decoding: bytes[keyStart..<index], as: UTF8.self)
            guard let value = valueAfterKey(bytes, from: index + 1) else { break }
            if let number = integer(value) {
                result[key] = number
            } else if nested.contains(key), value.first == UInt8(ascii: "{") {
                for (inner, number) in integerMembers(in: Array(value)) { result["\(key).\(inner)"] = number }
            }
            index = value.endIndex
            // Step past the separator; a value that ends the object ends the scan.
            while index < bytes.count && bytes[index] != UInt8(ascii: ",") && bytes[index] != UInt8(ascii: "}") { index += 1 }
            if index >= bytes.count || bytes[index] == UInt8(ascii: "}") { break }
            index += 1
        }
        return result
    }

    /// Parses an optionally negative decimal integer with surrounding white space; nil for anything else.
    static func integer(_ bytes: ArraySlice<UInt8>) -> Int? {
        var index = bytes.startIndex
        var end = bytes.endIndex
        while index < end, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 { index += 1 }
        while end > index, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D || bytes[end - 1] == 0x09 { end -= 1 }
        let negative = index < end && bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        guard index < end, end - index <= 18 else { return nil }
        var value = 0
        while index < end {
            let digit = bytes[index]
            guard digit >= 0x30 && digit <= 0x39 else { return nil }
            value = value * 10 + Int(digit - 0x30)
            index += 1
        }
        return negative ? -value : value
    }

    /// Returns the value that follows a key's closing quote: the bytes up to the
    /// end of the object, array, string or scalar.
    private static func valueAfterKey(_ bytes: [UInt8], from position: Int) -> ArraySlice<UInt8>? {
        var index = position
        while index < bytes.count && (bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09) { index += 1 }
        guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
        index += 1
        while index < bytes.count && (bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09) { index += 1 }
        let start = index
        var depth = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                index += 1
                while index < bytes.count && bytes[index] != UInt8(ascii: "\"") {
                    index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
                }
                if depth == 0 { return bytes[start...min(index, bytes.count - 1)] }
            } else if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                depth += 1
            } else if byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") {
                if depth == 0 { return bytes[start..<index] }
                depth -= 1
                if depth == 0 { return bytes[start...index] }
            } else if depth == 0 && byte == UInt8(ascii: ",") {
                return bytes[start..<index]
            }
            index += 1
        }
        return nil
    }
}
