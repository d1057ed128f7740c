import Foundation

/// `time_restrictions`: the hours and days, in an IANA time zone, when the agent may work.
public struct TimeRestrictions: Sendable {
    public enum Violation: String, Sendable, CaseIterable {
        /// Refuse calls outside the window.
        case deny
        /// Refuse calls outside the window with `violation_message`.
        case denyWithMessage = "deny_with_message"
        /// Freeze the agent until the window opens, then thaw it.
        case pause
        /// Stop the run.
        case kill
    }

    /// Start hour, inclusive, and end hour, exclusive; a start after the end wraps past midnight.
    public var startHour: Int
    public var endHour: Int
    /// Weekdays, 1 for Sunday to 7 for Saturday as Calendar numbers them; nil for every day.
    public var days: Set<Int>?
    public var timeZone: TimeZone
    public var onViolation: Violation
    public var message: String?

    public init(startHour: Int, endHour: Int, days: Set<Int>? = nil, timeZone: TimeZone = TimeZone(identifier: "UTC")!,
                onViolation: Violation = .deny, message: String? = nil) {
        self.startHour = startHour
        self.endHour = endHour
        self.days = days
        self.timeZone = timeZone
        self.onViolation = onViolation
        self.message = message
    }

    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Returns whether `time` (seconds since the epoch) is inside the allowed hours and days. With wrapping
    /// hours, the part after midnight belongs to the day it started on.
    public func allows(_ time: Double) -> Bool {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let date = Date(timeIntervalSince1970: time)
        let hour = calendar.component(.hour, from: date)
        var weekday = calendar.component(.weekday, from: date)
        let inHours: Bool
        if startHour == endHour {
            inHours = true
        } else if startHour < endHour {
            inHours = hour >= startHour && hour < endHour
        } else {
            inHours = hour >= startHour || hour < endHour
            // Before the end hour of a wrapping window, the window began the day before.
            if hour < endHour { weekday = weekday == 1 ? 7 : weekday - 1 }
        }
        guard inHours else { return false }
        return days.map { $0.contains(weekday) } ?? true
    }

    /// Returns the next time at or after `time` when the window is open, checked hour by hour for a week,
    /// or nil when it never opens.
    public func nextOpening(after time: Double) -> Double? {
        if allows(time) { return time }
        let hourStart = (time / 3_600).rounded(.down) * 3_600
        for step in 1...(24 * 8) {
            let candidate = hourStart + Double(step) * 3_600
            if allows(candidate) { return candidate }
        }
        return nil
    }

    /// Returns the next time after `time` when an open window closes, or nil when it never closes.
    public func nextClosing(after time: Double) -> Double? {
        guard allows(time) else { return time }
        let hourStart = (time / 3_600).rounded(.down) * 3_600
        for step in 1...(24 * 8) {
            let candidate = hourStart + Double(step) * 3_600
            if !allows(candidate) { return candidate }
        }
        return nil
    }

    /// Describes the window for messages: "09:00-17:00 Europe/Berlin, mon-fri".
    public var description: String {
        let hours = String(format: "%02d:00-%02d:00", startHour, endHour)
        let dayText = days.map { set in TimeRestrictions.dayNames.indices.filter { set.contains($0 + 1) }.map { TimeRestrictions.dayNames[$0] }.joined(separator: ",") }
        return "\(hours) \(timeZone.identifier)\(dayText.map { ", \($0)" } ?? "")"
    }
}
