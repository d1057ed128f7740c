import Foundation

/// An amount of US dollars, held as whole picodollars (1e-12 USD) so that sums
/// and ceiling comparisons are exact. Int64 covers about 9.2 million USD.
public struct USD: Sendable, Hashable, Comparable, CustomStringConvertible {
    public static let picodollarsPerDollar: Int64 = 1_000_000_000_000
    public static let zero = USD(picodollars: 0)

    public var picodollars: Int64

    public init(picodollars: Int64) {
        self.picodollars = picodollars
    }

    /// Parses a non-negative decimal such as "0.50" or "1e-3"; returns nil for anything else.
    public init?(decimalText: String) {
        let trimmed = decimalText.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.first != "-", trimmed.first != "+",
              trimmed.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "." || $0 == "e" || $0 == "E" || $0 == "-") }),
              let value = Decimal(string: trimmed, locale: Locale(identifier: "en_US_POSIX")),
              value >= 0, value < 9_000_000
        else { return nil }
        var scaled = value * Decimal(USD.picodollarsPerDollar)
        var rounded = Decimal()
        NSDecimalRound(&rounded, &scaled, 0, .plain)
        self.picodollars = NSDecimalNumber(decimal: rounded).int64Value
    }

    public var dollars: Double { Double(picodollars) / Double(USD.picodollarsPerDollar) }

    public static func < (lhs: USD, rhs: USD) -> Bool { lhs.picodollars < rhs.picodollars }
    public static func + (lhs: USD, rhs: USD) -> USD { USD(picodollars: lhs.picodollars + rhs.picodollars) }
    public static func - (lhs: USD, rhs: USD) -> USD { USD(picodollars: lhs.picodollars - rhs.picodollars) }
    public static func += (lhs: inout USD, rhs: USD) { lhs.picodollars += rhs.picodollars }
    public static func -= (lhs: inout USD, rhs: USD) { lhs.picodollars -= rhs.picodollars }

    /// Dollars with up to 8 decimals, trailing zeros removed: "0.0123", "2", "0.00000015".
    public var description: String {
        let sign = picodollars < 0 ? "-" : ""
        let magnitude = picodollars.magnitude
        let whole = magnitude / UInt64(USD.picodollarsPerDollar)
        // Round the fraction to 8 decimals (1e4 picodollars).
        var fraction = (magnitude % UInt64(USD.picodollarsPerDollar) + 5_000) / 10_000
        var wholePart = whole
        if fraction >= 100_000_000 {
            wholePart += 1
            fraction -= 100_000_000
        }
        if fraction == 0 { return "\(sign)\(wholePart)" }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 8 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(sign)\(wholePart).\(digits)"
    }
}
