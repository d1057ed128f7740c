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
