import MGPolicy

/// Tokens or picodollars spent by one rule's calls over a rolling window.
/// A call enters with its reserved amount and is updated to its settled
/// amount, so the total never undercounts a call in flight.
struct AmountWindow {
    struct Entry {
        var time: Double
        var id: UInt64
        var amount: Int64
        var settled = false
    }

    enum Measure {
        case tokens, picodollars
    }

    let measure: Measure
    let length: Double
    /// Whether the window starts at calendar boundaries (multiples of `length` since the epoch) instead of rolling.
    let fixed: Bool
    let limit: Int64
    /// The policy key, such as `max_tokens_per_minute`, for messages.
    let key: String
    private var storage: [Entry] = []
    private var start = 0
    /// The sum of the live entries' amounts.
    private(set) var total: Int64 = 0
    /// The part of `total` reserved by calls not settled yet.
    private(set) var inFlight: Int64 = 0

    init(measure: Measure, length: Double, limit: Int64, key: String, fixed: Bool = false) {
        self.measure = measure
        self.length = length
        self.fixed = fixed
        self.limit = limit
        self.key = key
    }

    var remaining: Int64 { limit - total }

    /// What would remain once the calls in flight settle to nothing: the most a wait of a second can free.
    var remainingAfterInFlight: Int64 { limit - (total - inFlight) }

    /// Formats an amount of this window's measure for messages: "1200 tokens" or "0.5 USD".
    func describe(_ amount: Int64) -> String {
        switch measure {
        case .tokens: return "\(amount) tokens"
        case .picodollars: return "\(USD(picodollars: amount)) USD"
        }
    }

    /// Returns the time entries must be newer than to count at `now`.
    func threshold(now: Double) -> Double {
        windowThreshold(now: now, length: length, fixed: fixed)
    }

    /// Drops entries that no longer count.
    mutating func prune(now: Double) {
        let threshold = threshold(now: now)
        while start < storage.count && storage[start].time <= threshold {
            total -= storage[start].amount
            if !storage[start].settled { inFlight -= storage[start].amount }
            start += 1
        }
        if start > 1_024 && start * 2 > storage.count {
            storage.removeFirst(start)
            start = 0
        }
    }

    /// The live entries' times and amounts, to merge with other runs' calls.
    var entries: [(time: Double, amount: Int64)] {
        storage[start...].map { ($0.time, $0.amount) }
    }

    mutating func append(time: Double, id: UInt64, amount: Int64) {
        storage.append(Entry(time: time, id: id, amount: amount))
        total += amount
        inFlight += amount
    }

    /// Sets a call's amount to what it settled at; a call that already left the window changes nothing.
    mutating func update(id: UInt64, amount: Int64) {
        guard let index = index(of: id) else { return }
        total += amount - storage[index].amount
        if !storage[index].settled { inFlight -= storage[index].amount }
        storage[index].amount = amount
        storage[index].settled = true
    }

    mutating func remove(id: UInt64) {
        guard let index = index(of: id) else { return }
        total -= storage[index].amount
        if !storage[index].settled { inFlight -= storage[index].amount }
        storage.remove(at: index)
    }

    /// Returns the seconds until enough entries expire for `needed` to fit, or
    /// nil when it cannot fit even in an empty window.
    func secondsUntilFits(_ needed: Int64, now: Double) -> Double? {
        guard needed <= limit else { return nil }
        // A fixed window frees everything at its next boundary and nothing before.
        if fixed { return max(0.001, nextWindowStart(now: now, length: length) - now) }
        var freed: Int64 = 0
        for index in start..<storage.count {
            freed += storage[index].amount
            if total - freed + needed <= limit {
                return max(0.001, storage[index].time + length - now)
            }
        }
        return length
    }

    /// Searches from the newest end, where a call still being settled usually is.
    private func index(of id: UInt64) -> Int? {
        var index = storage.count - 1
        while index >= start {
            if storage[index].id == id { return index }
            index -= 1
        }
        return nil
    }
}

/// Returns the time entries must be newer than to count in a window of `length` at `now`:
/// `now - length` for a rolling window, just before the current boundary for a fixed one.
func windowThreshold(now: Double, length: Double, fixed: Bool) -> Double {
    fixed ? ((now / length).rounded(.down) * length).nextDown : now - length
}

/// Returns the start of the fixed window after the one holding `now`.
func nextWindowStart(now: Double, length: Double) -> Double {
    ((now / length).rounded(.down) + 1) * length
}
