import MGPolicy

/// One call of another run of the same agent, as recorded in the ledger.
public struct SharedCall: Sendable, Equatable {
    /// When the call was admitted, in seconds since the Unix epoch.
    public var time: Double
    /// Every name the call was governed under.
    public var actions: [String]
    /// Whether the call belongs to this run's task (runs grouped with `--task`).
    public var sameTask: Bool
    /// Reserved input plus output tokens until the call settles, then the settled tokens.
    public var tokens: Int64
    /// The reserved cost until the call settles, then the settled cost.
    public var cost: USD
    public var settled: Bool

    public init(time: Double, actions: [String], sameTask: Bool, tokens: Int64, cost: USD, settled: Bool) {
        self.time = time
        self.actions = actions
        self.sameTask = sameTask
        self.tokens = tokens
        self.cost = cost
        self.settled = settled
    }
}

/// An admitted call as the ledger records it before it is forwarded.
public struct LedgerReservation: Sendable, Equatable {
    public var id: UInt64
    public var time: Double
    public var actions: [String]
    public var model: String
    public var tokens: Int64
    public var cost: USD
}

/// The ledger could not record a call, so the call is refused rather than forwarded unrecorded.
public struct LedgerFailure: Error, Sendable {
    public var message: String

    public init(message: String) {
        self.message = message
    }
}

/// Calls shared by every run of one agent, across processes and restarts.
///
/// The governor decides each call inside `admitting`, which holds a lock that
/// every process sharing the ledger takes. So two runs of one agent cannot both
/// admit the last call a shared window or ceiling allows.
public protocol SharedLedger: AnyObject, Sendable {
    /// Runs `decide` while no other run sharing the ledger can admit a call, then records the reservation it returns.
    /// `decide` gets the calls of the agent's other runs admitted since `since`, oldest first, when they changed
    /// since the previous call, and nil when they did not.
    func admitting(since: Double, _ decide: ([SharedCall]?) -> LedgerReservation?) throws(LedgerFailure)

    /// Replaces a call's reservation by its settled cost and tokens.
    func settled(id: UInt64, cost: USD, usage: Usage)

    /// Removes a call the provider did not bill.
    func released(id: UInt64)

    /// The mean cost of the agent's finished tasks, for `average_cost` in conditions; nil before the first.
    var averageTaskCost: USD? { get }
}

/// The calls of other runs that fall under one rule, for its windows and task limits.
struct SharedWindow {
    /// Admission times, oldest first, with running sums so a window total is two binary searches.
    private var times: [Double] = []
    private var tokenSums: [Int64] = [0]
    private var costSums: [Int64] = [0]
    private var reservedTokenSums: [Int64] = [0]
    private var reservedCostSums: [Int64] = [0]
    private var amounts: [(tokens: Int64, cost: Int64)] = []
    /// Calls, settled spend and reservations of this run's task in other runs.
    private(set) var taskCalls = 0
    private(set) var taskSettled = USD.zero
    private(set) var taskReserved = USD.zero

    init(calls: [SharedCall]) {
        for call in calls {
            times.append(call.time)
            amounts.append((call.tokens, call.cost.picodollars))
            tokenSums.append(tokenSums.last! + call.tokens)
            costSums.append(costSums.last! + call.cost.picodollars)
            reservedTokenSums.append(reservedTokenSums.last! + (call.settled ? 0 : call.tokens))
            reservedCostSums.append(reservedCostSums.last! + (call.settled ? 0 : call.cost.picodollars))
            if call.sameTask {
                taskCalls += 1
                if call.settled { taskSettled += call.cost } else { taskReserved += call.cost }
            }
        }
    }

    init() {}

    var isEmpty: Bool { times.isEmpty }

    /// Calls admitted after `time`.
    func count(after time: Double) -> Int {
        times.count - firstIndex(after: time)
    }

    /// Returns the total of a measure over calls admitted after `time`, and the part of it still reserved.
    func total(_ measure: AmountWindow.Measure, after time: Double) -> (total: Int64, reserved: Int64) {
        let first = firstIndex(after: time)
        switch measure {
        case .tokens: return (tokenSums.last! - tokenSums[first], reservedTokenSums.last! - reservedTokenSums[first])
        case .picodollars: return (costSums.last! - costSums[first], reservedCostSums.last! - reservedCostSums[first])
        }
    }

    /// Admission times and amounts after `time`, oldest first, to merge with this run's own entries.
    func entries(_ measure: AmountWindow.Measure?, after time: Double) -> [(time: Double, amount: Int64)] {
        (firstIndex(after: time)..<times.count).map { index in
            let amount: Int64
            switch measure {
            case .tokens: amount = amounts[index].tokens
            case .picodollars: amount = amounts[index].cost
            case nil: amount = 1
            }
            return (times[index], amount)
        }
    }

    private func firstIndex(after time: Double) -> Int {
        var low = 0
        var high = times.count
        while low < high {
            let middle = (low + high) / 2
            if times[middle] > time { high = middle } else { low = middle + 1 }
        }
        return low
    }
}

/// Seconds from `now` until enough of the merged entries leave a window of `length` for `needed` to fit under `limit`,
/// or nil when `needed` exceeds the limit even in an empty window. Entries must be newer than `now - length`.
func secondsUntilFits(_ needed: Int64, limit: Int64, entries: [(time: Double, amount: Int64)], length: Double, now: Double) -> Double? {
    guard needed <= limit else { return nil }
    var total = entries.reduce(Int64(0)) { $0 + $1.amount }
    if total + needed <= limit { return 0.001 }
    for entry in entries.sorted(by: { $0.time < $1.time }) {
        total -= entry.amount
        if total + needed <= limit { return max(0.001, entry.time + length - now) }
    }
    return length
}
