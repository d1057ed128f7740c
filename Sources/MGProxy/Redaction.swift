import Foundation

/// Redacts bodies for `audit: detailed`: the run token, the real keys and anything shaped like a common API key
/// or bearer token become `[REDACTED]`, and a body longer than `limit` bytes is cut.
/// NOTE: it finds secrets by shape; a secret of another shape inside a prompt is kept.
struct Redactor: @unchecked Sendable {
    // NSRegularExpression is immutable after creation and safe to share between threads.
    private let secrets: [String]
    private let patterns: [NSRegularExpression]
    let limit: Int

    init(secrets: [String], limit: Int = 64 << 10) {
        self.secrets = secrets.filter { $0.count >= 8 }.sorted { $0.count > $1.count }
        self.limit = limit
        // OpenAI and Anthropic keys (sk-...), AWS access key ids, and bearer tokens in text.
        let sources = [#"sk-[A-Za-z0-9_\-]{16,}"#, #"AKIA[0-9A-Z]{16}"#, #"(?i)bearer\s+[A-Za-z0-9._\-~+/]{16,}=*"#]
        patterns = sources.compactMap { try? NSRegularExpression(pattern: $0) }
    }

    func redact(_ bytes: [UInt8]) -> String {
        // Redacted before it is cut, so a secret across the limit is not half kept. The margin keeps the
        // work bounded for huge bodies and is longer than any secret.
        let margin = 4_096
        let cut = bytes.count > limit
        // JSON escapes such as sk\u002d... would hide a key from the patterns, so ASCII escapes are decoded first.
        var text = Redactor.decodingASCIIEscapes(String(decoding: cut ? Array(bytes.prefix(limit + margin)) : bytes, as: UTF8.self))
        for secret in secrets {
            text = text.replacingOccurrences(of: secret, with: "[REDACTED]")
        }
        for pattern in patterns {
            text = pattern.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "[REDACTED]")
        }
        if cut {
            text = String(text.utf8.prefix(limit)) ?? String(decoding: Array(text.utf8.prefix(limit)), as: UTF8.self)
            text += "…[\(bytes.count - limit) more bytes not kept]"
        }
        return text
    }

    /// Redacts a short field of an audit line (an action, a model, a reason) that a client may have filled
    /// with a secret. Substring checks come first, so a clean field costs no pattern match.
    func clean(_ text: String) -> String {
        let suspicious = secrets.contains { text.contains($0) } || text.contains("sk-") || text.contains("AKIA")
            || text.range(of: "bearer", options: .caseInsensitive) != nil || text.contains("\\u")
        return suspicious ? redact(Array(text.utf8)) : text
    }

    /// Replaces `\uXXXX` escapes of printable ASCII characters by the characters.
    static func decodingASCIIEscapes(_ text: String) -> String {
        guard text.contains("\\u") else { return text }
        var result = ""
        var rest = Substring(text)
        while let range = rest.range(of: "\\u") {
            result += rest[..<range.lowerBound]
            let digits = rest[range.upperBound...].prefix(4)
            if digits.count == 4, let code = UInt32(digits, radix: 16), code >= 0x20, code < 0x7f, let scalar = Unicode.Scalar(code) {
                result.unicodeScalars.append(scalar)
                rest = rest[rest.index(range.upperBound, offsetBy: 4)...]
            } else {
                result += "\\u"
                rest = rest[range.upperBound...]
            }
        }
        return result + rest
    }
}

/// Replaces the real provider keys in a streamed body with asterisks of the same length, across chunk
/// boundaries: the end of a chunk that could begin a key is held back until the next chunk shows
/// whether it does. An end that cannot begin a key (an SSE event ends with a blank line) goes out at once.
struct KeyMasker: Sendable {
    private let keys: [[UInt8]]
    private var pending: [UInt8] = []

    /// Keys shorter than 8 bytes are left alone, because masking them would corrupt ordinary text.
    init(keys: [String]) {
        self.keys = keys.map { Array($0.utf8) }.filter { $0.count >= 8 }
    }

    var isEmpty: Bool { keys.isEmpty }

    /// Returns the bytes that can go out now, with every whole key masked.
    mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        guard !keys.isEmpty else { return bytes }
        var buffer = pending + bytes
        KeyMasker.mask(&buffer, keys: keys)
        let held = longestKeyPrefixAtEnd(of: buffer)
        pending = Array(buffer.suffix(held))
        buffer.removeLast(held)
        return buffer
    }

    /// Returns what was held back, at the end of the stream.
    mutating func flush() -> [UInt8] {
        defer { pending = [] }
        return pending
    }

    /// Replaces every occurrence of each key in `bytes` with asterisks.
    static func mask(_ bytes: inout [UInt8], keys: [[UInt8]]) {
        for key in keys {
            var searchStart = 0
            while let found = firstIndex(of: key, in: bytes, from: searchStart) {
                bytes.replaceSubrange(found..<(found + key.count), with: repeatElement(UInt8(ascii: "*"), count: key.count))
                searchStart = found + key.count
            }
        }
    }

    /// Returns the length of the longest end of `bytes` that is a proper prefix of a key, or 0.
    private func longestKeyPrefixAtEnd(of bytes: [UInt8]) -> Int {
        var longest = 0
        for key in keys {
            var length = min(key.count - 1, bytes.count)
            while length > longest {
                if bytes[(bytes.count - length)...].elementsEqual(key[..<length]) {
                    longest = length
                    break
                }
                length -= 1
            }
        }
        return longest
    }
}
