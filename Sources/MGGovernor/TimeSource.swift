import Foundation
import Synchronization

/// The governor's clock, injected so window logic is tested without sleeping.
public protocol TimeSource: Sendable {
    /// Seconds since the Unix epoch.
    func now() -> Double
}

public struct SystemTimeSource: TimeSource {
    public init() {}
    public func now() -> Double { Date().timeIntervalSince1970 }
}

/// A time source that moves only when a test advances it.
public final class ManualTimeSource: TimeSource {
    private let current: Mutex<Double>

    public init(start: Double = 1_800_000_000) {
        current = Mutex(start)
    }

    public func now() -> Double { current.withLock { $0 } }

    public func advance(by seconds: Double) {
        current.withLock { $0 += seconds }
    }
}

/// The system clock shifted by a fixed offset, so tests can place a run at any time of day.
public struct OffsetTimeSource: TimeSource {
    public let offset: Double

    public init(offset: Double) {
        self.offset = offset
    }

    public func now() -> Double { Date().timeIntervalSince1970 + offset }
}
