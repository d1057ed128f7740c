import MGPolicy

/// Decides every call against every layer's rules and keeps the windows,
/// reservations and spend that those decisions need. Pure: time comes from an
/// injected source and nothing here touches a socket or a file.
///
/// The guarantee: `admit` reserves an upper bound of the call's cost and
/// counts the call in every window under one lock before it returns. So no
/// interleaving of concurrent calls can admit more than a limit or reserve past
/// a ceiling. `settle` replaces the reservation by the reported cost and
/// `release` gives it back for a call that the provider did not bill.
public final class Governor: Sendable {
    /// The minimum output cap worth forwarding a call with, unless the client set a smaller one.
    public static let minimumOutputTokens = 16

    private let layers: [Policy]
    private let time: any TimeSource
    private let state: Locked<State>

    private struct RuleKey: Hashable {
        var layer: Int
        var rule: Int
    }

    private struct RuleState {
        var window = WindowLog()          // admitted calls within the rule's longest window
        var amounts: [AmountWindow] = []  // tokens and dollars per minute, hour and day
        var taskCalls = 0                 // admitted calls in this task, in flight included
        var inFlight = 0
        var settled = USD.zero
        var reserved = USD.zero
        var completionCalls = 0           // admitted calls that write output
        var topics: [String: Int] = [:]   // admitted calls by topic, for max_iterations_per_topic
        var lastAction: String?
        var consecutive = 0
        var cooldownUntil = 0.0
        var consecutiveFailures = 0
        /// Failed attempts by request fingerprint, and when the last one failed.
        var failures: [UInt64: (count: Int, last: Double)] = [:]
    }

    private static func amountWindows(for rule: Rule) -> [AmountWindow] {
        let limits = rule.rateLimit
        let ceiling = rule.costCeiling
        var windows: [AmountWindow] = []
        for (limit, length, key) in [(limits.maxTokensPerMinute, 60.0, "max_tokens_per_minute"), (limits.maxTokensPerHour, 3_600, "max_tokens_per_hour"),
                                     (limits.maxTokensPerDay, 86_400, "max_tokens_per_day")] {
            if let limit {
                windows.append(AmountWindow(measure: .tokens, length: length, limit: Int64(limit), key: "\(rule.limitsPath).\(key)", fixed: limits.fixedWindows))
            }
        }
        for (limit, length, key) in [(ceiling.maxUSDPerMinute, 60.0, "max_usd_per_minute"), (ceiling.maxUSDPerHour, 3_600, "max_usd_per_hour"),
                                     (ceiling.maxUSDPerDay, 86_400, "max_usd_per_day")] {
            if let limit {
                windows.append(AmountWindow(measure: .picodollars, length: length, limit: limit.picodollars,
                                            key: rule.ceilingPath(key, section: ceiling.windowSection), fixed: limits.fixedWindows))
            }
        }
        return windows
    }

    private struct Reservation {
        var rules: [RuleKey]
        var cost: USD
        var tokens: Int64
        var price: ModelPrice
        var producesOutput: Bool
        var fingerprint: UInt64
        var topic: String?
    }

    private struct BudgetState {
        var day = 0                       // days since the Unix epoch, UTC
        var spent = USD.zero
        var reserved = USD.zero
        var warningReached = false
        var criticalReached = false
    }

    private struct State {
        var nextID: UInt64 = 1
        var rules: [RuleKey: RuleState] = [:]
        var reservations: [UInt64: Reservation] = [:]
        var totals = Totals()
        var budgets: [Int: BudgetState] = [:]  // by layer index
        var budgetEvents: [BudgetEvent] = []
        /// Recent operations, for the metrics conditions read; empty when no condition reads one.
        let history = CallHistory()
        /// Admitted calls of this task that write output.
        var iterations = 0
        /// Research calls admitted since the last LLM call that writes output.
        var researchStreak = 0
        /// The last call admitted or refused, which triggers read their variables from.
        var lastCall: CallDescriptor?
        /// When each tripped trigger may trip again, by name; infinity for one that trips once.
        var trippedUntil: [String: Double] = [:]
        /// The operation a break_loop trip denies until another one happens: its action and payload.
        var brokenLoop: (action: String, fingerprint: UInt64, trigger: String)?
        /// Until when a reduce_rate_limit(s) trip halves every count limit, and the trigger's name.
        var reducedUntil: (time: Double, trigger: String)?
        /// A cap_tokens trip's per-call token cap, until when it holds, and the trigger's name.
        var tokenCap: (tokens: Int, until: Double, trigger: String)?
        /// Tokens (input and output) of the latest settled LLM calls, oldest first, for cap_tokens.
        var recentCallTokens: [Int] = []
        /// Other runs' calls of this agent from the ledger: by rule, and all of them for budgets.
        var shared: [RuleKey: SharedWindow] = [:]
        var sharedAll = SharedWindow()
    }

    /// How far back the ledger's calls of other runs matter: the longest window is a day.
    static let sharedHorizon = 86_400.0 + 60

    /// Whether any rule limits retries, so callers know to compute request fingerprints.
    public let tracksRetries: Bool

    private let ledger: (any SharedLedger)?
    private let identity: RunIdentity
    private let taskID: String
    /// Whether any condition reads a metric, so operations must be kept in the history.
    private let recordsHistory: Bool
    /// Whether any rule has conditions, so decisions need an environment to evaluate them.
    private let hasConditions: Bool
    /// Whether callers must compute request fingerprints: for retry limits or same-action metrics.
    public let needsFingerprints: Bool

    /// With a ledger, every window, task limit and budget also counts the calls of the agent's other runs.
    public init(layers: [Policy], time: any TimeSource = SystemTimeSource(), ledger: (any SharedLedger)? = nil,
                identity: RunIdentity = RunIdentity(), taskID: String = "") {
        self.layers = layers
        self.ledger = ledger
        self.identity = identity
        self.taskID = taskID
        // Rules' conditions and model fallbacks' `when` read the same variables and metrics.
        let conditions = layers.flatMap {
            $0.rules.flatMap(\.conditions) + ($0.optimization?.modelFallbacks.compactMap(\.when) ?? []) + $0.triggers.map(\.condition)
        }
        self.hasConditions = layers.contains { $0.rules.contains { !$0.conditions.isEmpty } }
        self.recordsHistory = conditions.contains { !$0.metrics.isEmpty }
        let fingerprintMetrics = conditions.contains { condition in
            condition.metrics.contains { metric in
                switch metric {
                case .sameActionRepeated, .sameActionCount: return true
                default: return false
                }
            }
        }
        self.tracksRetries = layers.contains { layer in
            (layer.rules + (layer.globalRule.map { [$0] } ?? [])).contains { $0.rateLimit.maxRetries != nil || $0.rateLimit.retryDelaySeconds != nil }
        }
        self.needsFingerprints = tracksRetries || fingerprintMetrics
        self.time = time
        self.state = Locked(State())
    }

    public var totals: Totals { state.withLock { $0.totals } }

    /// Decides one call. On admission the reservation stays until `settle` or `release`.
    /// `countsDenial` is false for a queued call's retries, so that one call counts as at most one denial.
    public func admit(_ call: CallDescriptor, countsDenial: Bool = true) -> Decision {
        let now = time.now()
        func decideLocked(_ state: inout State) -> Decision {
            state.lastCall = call
            if let loop = state.brokenLoop {
                if loop.action == call.actions[0] && loop.fingerprint == call.fingerprint {
                    state.totals.denied += 1
                    return .refuse(Refusal(kind: .forbidden, limit: loop.trigger,
                                           message: "\(call.actions[0]) denied: the same request keeps repeating, which \(loop.trigger) reads as a loop; do something different"))
                }
                state.brokenLoop = nil
            }
            let decision = decide(call, now: now, state: &state)
            if case .refuse = decision, countsDenial {
                state.totals.denied += 1
                recordDenialAsFailure(call, state: &state)
                if recordsHistory {
                    state.history.record(CallHistory.Event(time: now, id: 0, action: call.actions[0], fingerprint: call.fingerprint,
                                                           inputTokens: 0, outputTokens: 0, cost: 0, outcome: .denied))
                }
            }
            if case .admit(let admission) = decision {
                if call.producesOutput { state.iterations += 1 }
                if call.isResearch {
                    state.researchStreak += 1
                } else if call.producesOutput && call.actions[0].hasPrefix("llm:") {
                    state.researchStreak = 0
                }
                if recordsHistory, let reservation = state.reservations[admission.id] {
                    state.history.record(CallHistory.Event(
                        time: now, id: admission.id, action: call.actions[0], fingerprint: call.fingerprint,
                        inputTokens: call.inputTokensBound, outputTokens: Int(reservation.tokens) - call.inputTokensBound,
                        cost: reservation.cost.picodollars, outcome: .pending))
                }
            }
            return decision
        }
        guard let ledger else { return state.withLock { decideLocked(&$0) } }
        var decision = Decision.refuse(Refusal(kind: .forbidden, limit: "ledger", message: "the ledger did not run the decision"))
        do {
            try ledger.admitting(since: now - Governor.sharedHorizon) { calls -> LedgerReservation? in
                state.withLock { state -> LedgerReservation? in
                    if let calls { loadShared(calls, state: &state) }
                    decision = decideLocked(&state)
                    guard case .admit(let admission) = decision, let reservation = state.reservations[admission.id] else { return nil }
                    return LedgerReservation(id: admission.id, time: now, actions: call.actions, model: call.model,
                                             tokens: reservation.tokens, cost: reservation.cost)
                }
            }
        } catch {
            if case .admit(let admission) = decision { giveBack(admission.id, now: now, failed: false) }
            return .refuse(Refusal(kind: .window(retryAfterSeconds: 5), limit: "ledger",
                                   message: "\(call.actions[0]) denied: \(error.message); retry in 5s"))
        }
        return decision
    }

    /// Replaces the other runs' calls by a fresh read of the ledger.
    private func loadShared(_ calls: [SharedCall], state: inout State) {
        state.sharedAll = SharedWindow(calls: calls)
        state.shared = [:]
        guard !calls.isEmpty else { return }
        for (layerIndex, layer) in layers.enumerated() {
            if let global = layer.globalRule {
                state.shared[RuleKey(layer: layerIndex, rule: -1)] = SharedWindow(calls: calls.filter { $0.actions.contains(where: global.matches) })
            }
            for (ruleIndex, rule) in layer.rules.enumerated() {
                state.shared[RuleKey(layer: layerIndex, rule: ruleIndex)] = SharedWindow(calls: calls.filter { $0.actions.contains(where: rule.matches) })
            }
        }
    }

    /// Replaces the call's reservation by the cost of what the provider reported, and returns that cost.
    @discardableResult
    public func settle(_ id: UInt64, usage: Usage) -> USD {
        settle(id, usage: usage, reportedCost: nil)
    }

    /// Settles a call at a cost its caller reported, for actions mg-run cannot price (the check API's reports).
    @discardableResult
    public func settle(_ id: UInt64, cost: USD, tokens: Int) -> USD {
        settle(id, usage: Usage(uncachedInputTokens: max(0, tokens), outputTokens: 0), reportedCost: cost)
    }

    private func settle(_ id: UInt64, usage: Usage, reportedCost: USD?) -> USD {
        let settled = state.withLock { state -> USD? in
            guard let reservation = state.reservations.removeValue(forKey: id) else { return nil }
            let cost = reportedCost ?? Pricing.cost(of: usage, at: reservation.price)
            for key in reservation.rules {
                state.rules[key, default: RuleState()].reserved -= reservation.cost
                state.rules[key, default: RuleState()].settled += cost
                state.rules[key, default: RuleState()].inFlight -= 1
                state.rules[key]!.consecutiveFailures = 0
                state.rules[key]!.failures[reservation.fingerprint] = nil
                for index in state.rules[key]!.amounts.indices {
                    let measure = state.rules[key]!.amounts[index].measure
                    let amount = measure == .tokens ? Int64(usage.inputTokens + usage.outputTokens) : cost.picodollars
                    state.rules[key]!.amounts[index].update(id: id, amount: amount)
                }
            }
            settleBudgets(reservation: reservation, cost: cost, state: &state)
            if recordsHistory {
                state.history.update(id: id, outcome: .settled, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, cost: cost.picodollars)
            }
            state.totals.reserved -= reservation.cost
            state.totals.inFlight -= 1
            state.totals.cost += cost
            state.totals.inputTokens += usage.inputTokens
            state.totals.outputTokens += usage.outputTokens
            if reservation.producesOutput && reportedCost == nil {
                state.recentCallTokens.append(usage.inputTokens + usage.outputTokens)
                if state.recentCallTokens.count > Governor.tokenCapSample { state.recentCallTokens.removeFirst() }
            }
            return cost
        }
        guard let settled else { return .zero }
        ledger?.settled(id: id, cost: settled, usage: usage)
        return settled
    }

    /// Gives back a reservation, its window slots and its task count, for a call the provider did not bill.
    /// The call counts as a failed attempt for the retry limits.
    public func release(_ id: UInt64) {
        if giveBack(id, now: time.now(), failed: true) { ledger?.released(id: id) }
    }

    /// Undoes an admission; `failed` counts it as a failed attempt for the retry limits. Returns false for an unknown id.
    @discardableResult
    private func giveBack(_ id: UInt64, now: Double, failed: Bool) -> Bool {
        state.withLock { state -> Bool in
            guard let reservation = state.reservations.removeValue(forKey: id) else { return false }
            if recordsHistory { state.history.update(id: id, outcome: .failed) }
            if reservation.producesOutput { state.iterations -= 1 }
            for key in reservation.rules {
                // Mutated in place, so the window array is not copied.
                state.rules[key]?.reserved -= reservation.cost
                state.rules[key]?.inFlight -= 1
                state.rules[key]?.taskCalls -= 1
                if failed {
                    state.rules[key]?.consecutiveFailures += 1
                    let previous = state.rules[key]?.failures[reservation.fingerprint]?.count ?? 0
                    state.rules[key]?.failures[reservation.fingerprint] = (previous + 1, now)
                }
                if reservation.producesOutput { state.rules[key]?.completionCalls -= 1 }
                if let topic = reservation.topic, let count = state.rules[key]?.topics[topic], count > 0 {
                    state.rules[key]?.topics[topic] = count - 1
                }
                state.rules[key]?.window.remove(id: id)
                for index in state.rules[key]?.amounts.indices ?? 0..<0 {
                    state.rules[key]!.amounts[index].remove(id: id)
                }
            }
            for layerIndex in layers.indices where layers[layerIndex].budget != nil {
                state.budgets[layerIndex]?.reserved -= reservation.cost
            }
            state.totals.reserved -= reservation.cost
            state.totals.inFlight -= 1
            state.totals.calls -= 1
            return true
        }
    }

    /// Returns the key path of a task ceiling that settled spend has passed, if any. Only a cost reported
    /// above its reservation (the check API's reports) can pass one.
    public func passedTaskCeiling() -> String? {
        state.withLock { state -> String? in
            for (key, ruleState) in state.rules {
                let rule = key.rule < 0 ? layers[key.layer].globalRule : layers[key.layer].rules[key.rule]
                if let rule, let ceiling = rule.costCeiling.maxUSDPerTask, ruleState.settled > ceiling {
                    return rule.ceilingPath("max_usd_per_task", section: rule.costCeiling.perTaskSection)
                }
            }
            return nil
        }
    }

    /// Counts a refused call that got a graceful conclusion instead of an error.
    public func recordConclusion() {
        state.withLock { $0.totals.concluded += 1 }
    }

    /// Counts a call refused before it reached the rules, such as one for an unpriced model.
    public func countDenial() {
        state.withLock { $0.totals.denied += 1 }
    }

    /// Moves a settled call from reserved to spent in every budget and records the thresholds it crosses.
    private func settleBudgets(reservation: Reservation, cost: USD, state: inout State) {
        for (layerIndex, layer) in layers.enumerated() {
            guard let budget = layer.budget, var spend = state.budgets[layerIndex] else { continue }
            spend.reserved -= reservation.cost
            spend.spent += cost
            let spentToday = spend.spent + sharedSpendToday(day: spend.day, state: state).settled
            let percent = budget.dailyLimit.picodollars > 0 ? Double(spentToday.picodollars) * 100 / Double(budget.dailyLimit.picodollars) : 100
            if let threshold = budget.warningPercent, !spend.warningReached, percent >= Double(threshold) {
                spend.warningReached = true
                state.budgetEvents.append(BudgetEvent(file: layer.file, level: "warning", percent: threshold, spent: spentToday, actions: budget.onWarning))
            }
            if let threshold = budget.criticalPercent, !spend.criticalReached, percent >= Double(threshold) {
                spend.criticalReached = true
                state.budgetEvents.append(BudgetEvent(file: layer.file, level: "critical", percent: threshold, spent: spentToday, actions: budget.onCritical))
            }
            state.budgets[layerIndex] = spend
        }
    }

    /// Other runs' spend since the start of a budget day, settled and still reserved.
    private func sharedSpendToday(day: Int, state: State) -> (settled: USD, reserved: USD) {
        guard !state.sharedAll.isEmpty else { return (.zero, .zero) }
        let (total, reserved) = state.sharedAll.total(.picodollars, after: (Double(day) * 86_400).nextDown)
        return (USD(picodollars: total - reserved), USD(picodollars: reserved))
    }

    /// Returns and clears the budget thresholds reached since the last call, oldest first.
    public func takeBudgetEvents() -> [BudgetEvent] {
        state.withLock { state in
            defer { state.budgetEvents = [] }
            return state.budgetEvents
        }
    }

    /// Returns the budget actions in force for a layer: those of every threshold its spend has reached.
    private func activeBudgetActions(layer: Int, state: State) -> [BudgetAction] {
        guard let budget = layers[layer].budget, let spend = state.budgets[layer] else { return [] }
        return (spend.warningReached ? budget.onWarning : []) + (spend.criticalReached ? budget.onCritical : [])
    }

    /// Returns the factor a layer's count limits are multiplied by: `reduce_rate_limits_by` of the budget
    /// thresholds in force, halved again while a reduce_rate_limit(s) trip lasts; 1 when none applies.
    private func countLimitFactor(layer: Int, now: Double, state: State) -> Double {
        let budgetFactor = activeBudgetActions(layer: layer, state: state).reduce(1.0) { factor, action in
            if case .reduceRateLimitsBy(let percent) = action { return factor * (1 - Double(percent) / 100) }
            return factor
        }
        let tripped = state.reducedUntil.map { now < $0.time } ?? false
        return tripped ? budgetFactor / 2 : budgetFactor
    }

    /// The number of latest settled LLM calls whose median token count a cap_tokens trip sets as the cap.
    static let tokenCapSample = 20

    /// Returns the median of the tokens of the latest settled LLM calls, or nil before the first one.
    static func median(_ values: [Int]) -> Int? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// Moves a layer's budget to a new day when midnight UTC has passed.
    private func rollBudgetDay(layer: Int, now: Double, state: inout State) {
        let today = Int((now / 86_400).rounded(.down))
        if state.budgets[layer, default: BudgetState()].day != today {
            let reserved = state.budgets[layer]?.reserved ?? .zero
            state.budgets[layer] = BudgetState(day: today, reserved: reserved)
        }
    }

    // MARK: - Decision

    /// Counts a denied call as an unsuccessful result of every rule it matches, for max_consecutive_failures.
    private func recordDenialAsFailure(_ call: CallDescriptor, state: inout State) {
        for (layerIndex, layer) in layers.enumerated() {
            if layer.globalRule?.rateLimit.maxConsecutiveFailures != nil {
                state.rules[RuleKey(layer: layerIndex, rule: -1)]?.consecutiveFailures += 1
            }
            for (ruleIndex, rule) in layer.rules.enumerated() where rule.rateLimit.maxConsecutiveFailures != nil && call.actions.contains(where: rule.matches) {
                state.rules[RuleKey(layer: layerIndex, rule: ruleIndex)]?.consecutiveFailures += 1
            }
        }
    }

    /// Starts the cooldown of every rule whose rate-limit object produced the refusal, except for a cooldown itself.
    private func startCooldowns(_ matched: [(key: RuleKey, rule: Rule)], refusal: Refusal, now: Double, state: inout State) {
        for (key, rule) in matched {
            guard let seconds = rule.rateLimit.cooldownSeconds, let origin = refusal.origin,
                  origin.layer == key.layer, origin.rule == key.rule, refusal.limit.hasPrefix(rule.limitsPath + "."),
                  !refusal.limit.hasSuffix(".cooldown_seconds") else { continue }
            let until = max(state.rules[key]?.cooldownUntil ?? 0, now + Double(seconds))
            state.rules[key]?.cooldownUntil = until
        }
    }

    /// Checks every trigger against the run's metrics now and returns those that tripped, with the values
    /// they read. A trigger that tripped does not trip again during its cooldown, or ever without one.
    /// A break_loop trip takes effect here: the repeating operation is denied until another one happens.
    public func checkTriggers() -> [Trip] {
        let triggers = layers.flatMap(\.triggers)
        guard !triggers.isEmpty else { return [] }
        let now = time.now()
        return state.withLock { state -> [Trip] in
            let call = state.lastCall ?? CallDescriptor(actions: [""], model: "", price: ModelPrice(inputPerToken: 0, outputPerToken: 0),
                                                         inputTokensBound: 0, inputTokensEstimate: 0, producesOutput: false)
            var environment = self.environment(call, now: now, state: state)
            environment.callIsPending = false
            var trips: [Trip] = []
            for trigger in triggers where (state.trippedUntil[trigger.name] ?? 0) <= now {
                guard trigger.condition.evaluate(environment) else { continue }
                state.trippedUntil[trigger.name] = trigger.cooldownSeconds.map { now + $0 } ?? .infinity
                let values = trigger.condition.metrics.map { "\($0)=\(Trip.format(environment.metric($0)))" }.sorted()
                    + trigger.condition.variables.sorted().map { "\($0)=\(environment.variable($0))" }
                var effect = ""
                let until = trigger.cooldownSeconds.map { now + $0 } ?? .infinity
                switch trigger.action {
                case .breakLoop where state.lastCall != nil:
                    state.brokenLoop = (call.actions[0], call.fingerprint, trigger.name)
                case .reduceRateLimit, .reduceRateLimits:
                    state.reducedUntil = (until, trigger.name)
                    effect = "count limits halved " + (until.isFinite ? "for \(formatSeconds(until - now))" : "for the rest of the run")
                case .capTokens:
                    if let median = Governor.median(state.recentCallTokens) {
                        state.tokenCap = (median, until, trigger.name)
                        effect = "per-call token cap \(median), the median of the last \(state.recentCallTokens.count) calls, "
                            + (until.isFinite ? "for \(formatSeconds(until - now))" : "for the rest of the run")
                    } else {
                        effect = "no settled call to take a median from yet, so no cap"
                    }
                default:
                    break
                }
                trips.append(Trip(trigger: trigger, values: values.joined(separator: ", "), effect: effect))
            }
            return trips
        }
    }

    /// Evaluates a condition, such as a model fallback's `when`, against a call and the run's state now.
    public func holds(_ condition: Condition, for call: CallDescriptor) -> Bool {
        let now = time.now()
        return state.withLock { condition.evaluate(environment(call, now: now, state: $0)) }
    }

    /// Returns what conditions read for this call: its request, the run's identity, the history and the ledger.
    private func environment(_ call: CallDescriptor, now: Double, state: State) -> DecisionEnvironment {
        let price = call.price
        let inputRate = call.mayWriteCache ? price.inputPerTokenWritingCache : price.inputPerToken
        let output = call.producesOutput ? (call.requestedOutputTokens ?? price.maxOutputTokens) * call.choices : 0
        let bound = Int64(call.inputTokensBound) * inputRate + price.perCall + Int64(output) * price.outputPerToken
        let dayStart = (now / 86_400).rounded(.down) * 86_400
        let shared = state.sharedAll.total(.picodollars, after: dayStart.nextDown).total
        return DecisionEnvironment(call: call, now: now, identity: identity, taskID: taskID, history: state.history,
                                   taskCalls: state.totals.calls, taskIterations: state.iterations,
                                   estimatedCost: Double(bound) / 1e12, sharedCostToday: Double(shared) / 1e12,
                                   averageTaskCost: ledger?.averageTaskCost.map { Double($0.picodollars) / 1e12 })
    }

    private func decide(_ call: CallDescriptor, now: Double, state: inout State) -> Decision {
        // Outside a layer's allowed hours no call goes through, whatever on_violation then does to the agent.
        for layer in layers {
            guard let restrictions = layer.timeRestrictions, !restrictions.allows(now) else { continue }
            let wait = restrictions.nextOpening(after: now).map { max(1, $0 - now) }
            let message = restrictions.onViolation == .denyWithMessage && restrictions.message != nil
                ? restrictions.message!
                : "\(call.actions[0]) denied: outside the allowed hours of \(layer.file) (\(restrictions.description))"
            return .refuse(Refusal(kind: wait.map { .window(retryAfterSeconds: $0) } ?? .forbidden, limit: "time_restrictions", message: message))
        }
        var matched: [(key: RuleKey, rule: Rule)] = []
        let conditionEnvironment = hasConditions ? environment(call, now: now, state: state) : nil
        // A rule applies when its glob matches one of the call's names and all its conditions hold.
        func applies(_ rule: Rule) -> Bool {
            guard call.actions.contains(where: rule.matches) else { return false }
            guard let conditionEnvironment, !rule.conditions.isEmpty else { return true }
            // A condition that reads a missing value fails closed: a deny rule applies, an allow rule does not.
            return rule.conditions.allSatisfy { $0.holds(conditionEnvironment, failClosedTrue: rule.effect == .deny) }
        }
        for (layerIndex, layer) in layers.enumerated() {
            // A layer's global limits apply to every call, but allow nothing by themselves.
            if let global = layer.globalRule {
                matched.append((RuleKey(layer: layerIndex, rule: -1), global))
            }
            guard !layer.rules.isEmpty else { continue }
            var layerMatched = false
            for (ruleIndex, rule) in layer.rules.enumerated() where applies(rule) {
                layerMatched = true
                if rule.effect == .deny {
                    return .refuse(Refusal(
                        kind: .forbidden, limit: rule.path,
                        message: "\(call.actions[0]) is denied by \(rule.path) (action \"\(rule.action)\", effect deny) at \(rule.position)"))
                }
                if let (key, value) = rule.requires.first(where: { call.context[$0.key] != $0.value }) {
                    let carried = call.context[key].map { "'\($0)'" } ?? "nothing"
                    return .refuse(Refusal(
                        kind: .forbidden, limit: "\(rule.path).requires.\(key)",
                        message: "\(call.actions[0]) denied: \(rule.path) at \(rule.position) requires context \(key) = '\(value)', and the call carries \(carried); set it with --context, an X-MG-Context-\(key) header or the check API's context"))
                }
                matched.append((RuleKey(layer: layerIndex, rule: ruleIndex), rule))
            }
            if !layerMatched && layer.defaultEffect == .deny {
                // A rule whose glob matches but whose conditions do not hold is the likelier cause than a missing rule.
                if let blocked = layer.rules.first(where: { rule in rule.effect == .allow && !rule.conditions.isEmpty && call.actions.contains(where: rule.matches) }) {
                    return .refuse(Refusal(
                        kind: .forbidden, limit: "\(blocked.path).conditions",
                        message: "\(call.actions[0]) denied: \(blocked.path) at \(blocked.position) allows it only when \(blocked.conditions.map(\.text).joined(separator: " AND ")), which does not hold now, and default_effect is deny"))
                }
                return .refuse(Refusal(
                    kind: .forbidden, limit: "default_effect",
                    message: "no rule in \(layer.file) allows \(call.actions.joined(separator: " or ")), and its default_effect is deny; add a rule with action \"\(call.actions[0])\" or \"llm:*\""))
            }
        }

        for (layerIndex, layer) in layers.enumerated() where layer.budget != nil {
            rollBudgetDay(layer: layerIndex, now: now, state: &state)
            let actions = activeBudgetActions(layer: layerIndex, state: state)
            if actions.contains(.pauseNonEssential) {
                let spend = state.budgets[layerIndex]
                let source = spend?.criticalReached == true && layer.budget?.onCritical.contains(.pauseNonEssential) == true ? "budget.on_critical" : "budget.on_warning"
                let layerMatches = matched.filter { $0.key.layer == layerIndex && $0.key.rule >= 0 }.map(\.rule)
                let anyEssential = layer.rules.contains(where: \.essential)
                let allowed = anyEssential ? layerMatches.contains(where: \.essential) : call.actions[0].hasPrefix("llm:")
                if !allowed {
                    return .refuse(Refusal(kind: .forbidden, limit: source,
                                           message: "\(call.actions[0]) denied: the daily budget in \(layer.file) reached a threshold that pauses non-essential actions; mark the rule essential: true to keep it"))
                }
            }
        }

        let price = call.price
        let perOutputToken = price.outputPerToken * Int64(call.choices)
        let inputRate = call.mayWriteCache ? price.inputPerTokenWritingCache : price.inputPerToken
        let inputCost = USD(picodollars: Int64(call.inputTokensBound) * inputRate + price.perCall)
        // A price without an output limit (an unknown model allowed for free) leaves the client's cap alone.
        let unknownLimit = Int(Int32.max)
        var modelLimit = 0
        if call.producesOutput {
            modelLimit = price.maxOutputTokens > 0 ? price.maxOutputTokens : unknownLimit
        }
        var outputCap = min(call.requestedOutputTokens ?? modelLimit, modelLimit)
        let minimumOutput = min(call.requestedOutputTokens ?? Governor.minimumOutputTokens, Governor.minimumOutputTokens, modelLimit)
        var worst: Refusal?
        var currentRule: RuleKey?
        func refuse(_ refusal: Refusal) {
            var refusal = refusal
            if let currentRule { refusal.origin = (currentRule.layer, currentRule.rule) }
            if worst == nil || refusal.isMoreSevere(than: worst!) { worst = refusal }
        }
        // Output tokens affordable from `budget` after the input, or nil when the input alone does not fit.
        func affordableOutput(_ budget: USD) -> Int? {
            let left = budget.picodollars - inputCost.picodollars
            if left < 0 { return nil }
            if perOutputToken == 0 { return Int.max }
            return Int(min(left / perOutputToken, Int64(Int32.max)))
        }

        for (layerIndex, layer) in layers.enumerated() {
            guard let budget = layer.budget, var spend = state.budgets[layerIndex] else { continue }
            let path = "budget.daily_limit_usd"
            let shared = sharedSpendToday(day: spend.day, state: state)
            spend.spent += shared.settled
            spend.reserved += shared.reserved
            if let affordable = affordableOutput(budget.dailyLimit - spend.spent - spend.reserved), affordable >= minimumOutput {
                outputCap = min(outputCap, affordable)
            } else if let affordable = affordableOutput(budget.dailyLimit - spend.spent), affordable >= minimumOutput {
                refuse(Refusal(kind: .window(retryAfterSeconds: 1), limit: path,
                               message: "\(call.actions[0]) denied: \(path) (\(budget.dailyLimit) USD) in \(layer.file) is reserved by calls in flight; retry in 1s"))
            } else {
                refuse(Refusal(kind: .quota, limit: path,
                               message: "\(call.actions[0]) denied: \(path) (\(budget.dailyLimit) USD) in \(layer.file) is spent (\(spend.spent) USD today); it resets at midnight UTC"))
            }
        }

        for (key, rule) in matched {
            currentRule = key
            let factor = countLimitFactor(layer: key.layer, now: now, state: state)
            // reduce_rate_limits_by scales every count limit while its threshold is in force.
            // A reduced limit keeps at least one call, so a reduction never shuts the rule.
            func scaled(_ limit: Int) -> Int { factor == 1 || limit == 0 ? limit : max(1, Int((Double(limit) * factor).rounded(.down))) }
            if state.rules[key] == nil {
                state.rules[key] = RuleState(amounts: Governor.amountWindows(for: rule))
            }
            for index in state.rules[key]!.amounts.indices {
                state.rules[key]!.amounts[index].prune(now: now)
            }
            var ruleState = state.rules[key]!
            let shared = state.shared[key] ?? SharedWindow()
            // Other runs of the same task count toward the task limits.
            ruleState.taskCalls += shared.taskCalls
            ruleState.settled += shared.taskSettled
            ruleState.reserved += shared.taskReserved
            let limits = rule.rateLimit
            for window in ruleState.amounts {
                let windowStart = window.threshold(now: now)
                let (sharedTotal, sharedReserved) = shared.total(window.measure, after: windowStart)
                let needed: Int64
                // Output tokens that fit in `remaining`, or nil when the input alone does not.
                func affordable(_ remaining: Int64) -> Int? {
                    switch window.measure {
                    case .tokens:
                        // The input's upper bound, like a cost reservation, so concurrent calls cannot overshoot.
                        let left = remaining - Int64(call.inputTokensBound)
                        return left < 0 ? nil : Int(min(left / Int64(call.choices), Int64(Int32.max)))
                    case .picodollars:
                        return affordableOutput(USD(picodollars: remaining))
                    }
                }
                switch window.measure {
                case .tokens: needed = Int64(call.inputTokensBound + minimumOutput * call.choices)
                case .picodollars: needed = inputCost.picodollars + Int64(minimumOutput) * perOutputToken
                }
                if let fits = affordable(window.remaining - sharedTotal), fits >= minimumOutput {
                    if call.producesOutput { outputCap = min(outputCap, fits) }
                } else if let fits = affordable(window.remainingAfterInFlight - (sharedTotal - sharedReserved)), fits >= minimumOutput {
                    // It would fit once the calls in flight settle below their reservations.
                    refuse(Refusal(kind: .window(retryAfterSeconds: 1), limit: window.key,
                                   message: "\(call.actions[0]) denied: \(window.key) (\(window.describe(window.limit))) is reserved by calls in flight at \(rule.position); retry in 1s"))
                } else if let wait = shared.isEmpty || window.fixed ? window.secondsUntilFits(needed, now: now)
                            : secondsUntilFits(needed, limit: window.limit, entries: window.entries + shared.entries(window.measure, after: windowStart),
                                               length: window.length, now: now) {
                    refuse(Refusal(kind: .window(retryAfterSeconds: wait), limit: window.key,
                                   message: "\(call.actions[0]) denied: \(window.key) (\(window.describe(window.limit))) is used up at \(rule.position); retry in \(formatSeconds(wait))"))
                } else {
                    refuse(Refusal(kind: .forbidden, limit: window.key,
                                   message: "\(call.actions[0]) denied: this call alone needs \(window.describe(needed)), more than \(window.key) (\(window.describe(window.limit))) at \(rule.position); shorten the request"))
                }
            }
            for (unscaled, length, name) in limits.countWindows {
                let limit = scaled(unscaled)
                let windowStart = windowThreshold(now: now, length: length, fixed: limits.fixedWindows)
                let sharedCount = shared.count(after: windowStart)
                if ruleState.window.count(after: windowStart) + sharedCount >= limit {
                    var reopensAt = now + length
                    if limits.fixedWindows {
                        reopensAt = nextWindowStart(now: now, length: length)
                    } else if limit > 0 && sharedCount == 0 {
                        reopensAt = ruleState.window.reopeningEntryTime(after: now - length, limit: limit) + length
                    } else if limit > 0 {
                        let entries = ruleState.window.entries(after: now - length) + shared.entries(nil, after: now - length)
                        reopensAt = now + (secondsUntilFits(1, limit: Int64(limit), entries: entries, length: length, now: now) ?? length)
                    }
                    refuse(Refusal(
                        kind: .window(retryAfterSeconds: max(0.001, reopensAt - now)),
                        limit: "\(rule.limitsPath).\(name)",
                        message: "\(call.actions[0]) denied: \(rule.limitsPath).\(name) (\(limit)) reached at \(rule.position); retry in \(formatSeconds(reopensAt - now))"))
                }
            }
            if let limit = limits.maxPerTask.map(scaled), ruleState.taskCalls >= limit {
                let path = "\(rule.limitsPath).max_per_task"
                if ruleState.taskCalls - ruleState.inFlight >= limit && shared.taskReserved == .zero {
                    refuse(Refusal(kind: .quota, limit: path,
                                   message: "\(call.actions[0]) denied: \(path) (\(limit) calls) is used up for this task (\(rule.position))"))
                } else {
                    refuse(Refusal(kind: .window(retryAfterSeconds: 1), limit: path,
                                   message: "\(call.actions[0]) denied: \(path) (\(limit)) is taken by calls in flight; retry in 1s"))
                }
            }
            if let limit = rule.maxConsecutiveResearch, call.isResearch, state.researchStreak >= limit {
                let path = "\(rule.path).behavioral_limits.max_consecutive_research"
                refuse(Refusal(kind: .forbidden, limit: path,
                               message: "\(call.actions[0]) denied: \(state.researchStreak) research calls in a row reached \(path) (\(limit)) at \(rule.position); write up what you found with an LLM call before researching more"))
            }
            if let limit = rule.maxIterationsPerTopic, let topic = call.topic, ruleState.topics[topic, default: 0] >= limit {
                let path = "\(rule.path).behavioral_limits.max_iterations_per_topic"
                refuse(Refusal(kind: .forbidden, limit: path,
                               message: "\(call.actions[0]) denied: topic '\(topic)' had \(ruleState.topics[topic, default: 0]) calls, the limit of \(path) at \(rule.position); move on to another topic or conclude"))
            }
            if let limit = rule.requireConclusionAfter, call.producesOutput, ruleState.completionCalls >= limit {
                let path = "\(rule.path).behavioral_limits.require_conclusion_after"
                refuse(Refusal(kind: .conclude, limit: path,
                               message: "\(call.actions[0]) concluded: \(ruleState.completionCalls) LLM calls reached \(path) (\(limit)) at \(rule.position)",
                               stopReason: "behavioral_limits:require_conclusion_after"))
            }
            let isRetry = call.retryCount > 0 || ruleState.failures[call.fingerprint] != nil
            if isRetry, let failed = ruleState.failures[call.fingerprint] {
                if let limit = limits.maxRetries, failed.count > limit {
                    let path = "\(rule.limitsPath).max_retries"
                    refuse(Refusal(kind: .forbidden, limit: path,
                                   message: "\(call.actions[0]) denied: this request failed \(failed.count) times, past \(path) (\(limit)) at \(rule.position); change the request instead of retrying it"))
                }
                if let delay = limits.retryDelaySeconds, now - failed.last < Double(delay) {
                    let wait = failed.last + Double(delay) - now
                    refuse(Refusal(kind: .window(retryAfterSeconds: wait), limit: "\(rule.limitsPath).retry_delay_seconds",
                                   message: "\(call.actions[0]) denied: a retry must wait \(delay)s after its failure (\(rule.limitsPath).retry_delay_seconds at \(rule.position)); retry in \(formatSeconds(wait))"))
                }
            }
            if let limit = limits.maxConsecutiveFailures, ruleState.consecutiveFailures >= limit {
                let path = "\(rule.limitsPath).max_consecutive_failures"
                refuse(Refusal(kind: .quota, limit: path,
                               message: "\(call.actions[0]) denied: \(ruleState.consecutiveFailures) unsuccessful results in a row reached \(path) (\(limit)) at \(rule.position); the action is stopped for this task"))
            }
            if now < ruleState.cooldownUntil {
                let wait = ruleState.cooldownUntil - now
                refuse(Refusal(kind: .window(retryAfterSeconds: wait), limit: "\(rule.limitsPath).cooldown_seconds",
                               message: "\(call.actions[0]) denied: \(rule.path) is cooling down after a limit was hit (\(rule.limitsPath).cooldown_seconds, \(rule.position)); retry in \(formatSeconds(wait))"))
            }
            if let limit = limits.maxConsecutive, ruleState.lastAction == call.actions[0], ruleState.consecutive >= limit {
                let path = "\(rule.limitsPath).max_consecutive"
                refuse(Refusal(kind: .forbidden, limit: path,
                               message: "\(call.actions[0]) denied: called \(ruleState.consecutive) times in a row, the limit of \(path) at \(rule.position); do something else before calling it again"))
            }
            if let limit = limits.maxConcurrent.map(scaled), ruleState.inFlight >= limit {
                let path = "\(rule.limitsPath).max_concurrent"
                refuse(Refusal(kind: .window(retryAfterSeconds: 1), limit: path,
                               message: "\(call.actions[0]) denied: \(path) (\(limit)) calls are in flight at \(rule.position); retry in 1s"))
            }
            if let limit = limits.maxDepth, let depth = call.depth, depth > limit {
                let path = "\(rule.limitsPath).max_depth"
                refuse(Refusal(kind: .forbidden, limit: path,
                               message: "\(call.actions[0]) denied: a sub-agent at depth \(depth) is deeper than \(path) (\(limit)) at \(rule.position); do the work in this agent instead of delegating it"))
            }
            if let limit = limits.maxInputTokensPerCall, call.inputTokensEstimate > limit {
                let path = "\(rule.limitsPath).max_input_tokens_per_call"
                refuse(Refusal(kind: .forbidden, limit: path,
                               message: "\(call.actions[0]) denied: about \(call.inputTokensEstimate) input tokens exceed \(path) (\(limit)) at \(rule.position); shorten the request"))
            }
            if let limit = limits.maxOutputTokensPerCall, call.producesOutput {
                let path = "\(rule.limitsPath).max_output_tokens_per_call"
                let perChoice = limit / call.choices
                if perChoice < minimumOutput {
                    refuse(Refusal(kind: .forbidden, limit: path,
                                   message: "\(call.actions[0]) denied: \(path) (\(limit)) leaves fewer than \(minimumOutput) output tokens for each of \(call.choices) choices at \(rule.position); lower n"))
                } else {
                    outputCap = min(outputCap, perChoice)
                }
            }
            if let limit = limits.maxTokensPerCall {
                let path = "\(rule.limitsPath).max_tokens_per_call"
                let left = (limit - call.inputTokensEstimate) / call.choices
                let fits = call.producesOutput ? left >= minimumOutput : call.inputTokensEstimate <= limit
                if !fits {
                    refuse(Refusal(kind: .forbidden, limit: path,
                                   message: "\(call.actions[0]) denied: about \(call.inputTokensEstimate) input tokens leave no room for output under \(path) (\(limit)) at \(rule.position); shorten the request"))
                } else if call.producesOutput {
                    outputCap = min(outputCap, left)
                }
            }
            if let ceiling = rule.costCeiling.maxUSDPerCall {
                let path = rule.ceilingPath("max_usd_per_call", section: rule.costCeiling.perCallSection)
                if let affordable = affordableOutput(ceiling), affordable >= minimumOutput {
                    outputCap = min(outputCap, affordable)
                } else {
                    refuse(Refusal(kind: .forbidden, limit: path,
                                   message: "\(call.actions[0]) denied: its cost bound (\(inputCost) USD for input alone, before output) exceeds \(path) (\(ceiling) USD) at \(rule.position); shorten the request or raise the ceiling"))
                }
            }
            if let ceiling = rule.costCeiling.maxUSDPerTask {
                let path = rule.ceilingPath("max_usd_per_task", section: rule.costCeiling.perTaskSection)
                if let affordable = affordableOutput(ceiling - ruleState.settled - ruleState.reserved), affordable >= minimumOutput {
                    outputCap = min(outputCap, affordable)
                } else if let affordable = affordableOutput(ceiling - ruleState.settled), affordable >= minimumOutput {
                    // It would fit once the calls in flight settle below their reservations.
                    refuse(Refusal(kind: .window(retryAfterSeconds: 1), limit: path,
                                   message: "\(call.actions[0]) denied: \(path) (\(ceiling) USD) is reserved by calls in flight; retry in 1s"))
                } else {
                    refuse(Refusal(kind: .quota, limit: path,
                                   message: "\(call.actions[0]) denied: \(path) (\(ceiling) USD) is spent (\(ruleState.settled) USD settled) and cannot fit this call; the task is over budget",
                                   stopReason: "cost_ceiling:max_usd_per_task"))
                }
            }
        }
        // A cap_tokens trip lowers the per-call token cap of LLM calls to the recent median while it lasts.
        if let cap = state.tokenCap, now < cap.until, call.producesOutput, !call.model.isEmpty {
            currentRule = nil
            let path = "\(cap.trigger).cap_tokens"
            let left = (cap.tokens - call.inputTokensEstimate) / call.choices
            if left < minimumOutput {
                refuse(Refusal(kind: .window(retryAfterSeconds: max(1, cap.until - now)), limit: path,
                               message: "\(call.actions[0]) denied: about \(call.inputTokensEstimate) input tokens leave no room for output under the \(cap.tokens)-token cap that \(cap.trigger) set; shorten the request or retry in \(formatSeconds(cap.until - now))"))
            } else {
                outputCap = min(outputCap, left)
            }
        }
        if let worst {
            startCooldowns(matched, refusal: worst, now: now, state: &state)
            return .refuse(worst)
        }

        let outputTokens = call.producesOutput ? max(0, outputCap) : 0
        let reservedCost = inputCost + USD(picodollars: Int64(outputTokens) * perOutputToken)
        let id = state.nextID
        state.nextID += 1
        var keys: [RuleKey] = []
        for (key, rule) in matched {
            // Mutated in place: copying RuleState out and back would copy its window array on every call.
            if state.rules[key]!.lastAction == call.actions[0] {
                state.rules[key]!.consecutive += 1
            } else {
                state.rules[key]!.lastAction = call.actions[0]
                state.rules[key]!.consecutive = 1
            }
            if call.producesOutput { state.rules[key]!.completionCalls += 1 }
            if rule.maxIterationsPerTopic != nil, let topic = call.topic { state.rules[key]!.topics[topic, default: 0] += 1 }
            state.rules[key, default: RuleState()].taskCalls += 1
            state.rules[key, default: RuleState()].inFlight += 1
            state.rules[key, default: RuleState()].reserved += reservedCost
            let reservedTokens = Int64(call.inputTokensBound + outputTokens * call.choices)
            for index in state.rules[key]!.amounts.indices {
                let amount = state.rules[key]!.amounts[index].measure == .tokens ? reservedTokens : reservedCost.picodollars
                state.rules[key]!.amounts[index].append(time: now, id: id, amount: amount)
            }
            if let longestWindow = rule.rateLimit.countWindows.map(\.seconds).max() {
                state.rules[key]!.window.prune(through: now - longestWindow)
                state.rules[key]!.window.append(time: now, id: id)
            }
            keys.append(key)
        }
        for layerIndex in layers.indices where layers[layerIndex].budget != nil {
            state.budgets[layerIndex, default: BudgetState()].reserved += reservedCost
        }
        state.reservations[id] = Reservation(rules: keys, cost: reservedCost, tokens: Int64(call.inputTokensBound + outputTokens * call.choices),
                                             price: price, producesOutput: call.producesOutput,
                                             fingerprint: call.fingerprint, topic: call.topic)
        state.totals.calls += 1
        state.totals.inFlight += 1
        state.totals.reserved += reservedCost
        return .admit(Admission(
            id: id,
            outputTokens: call.producesOutput ? outputTokens : nil,
            rewritesOutputCap: call.producesOutput && outputTokens != call.requestedOutputTokens && outputTokens != unknownLimit,
            reservedCost: reservedCost,
            auditLevel: matched.filter { $0.key.rule >= 0 }.map(\.rule.audit).max() ?? .basic))
    }
}

func formatSeconds(_ seconds: Double) -> String {
    if seconds < 1 { return "\(Int((seconds * 1000).rounded(.up)))ms" }
    return "\(Int(seconds.rounded(.up)))s"
}

extension RateLimit {
    /// The rolling count windows this limit sets, with their length and policy key.
    var countWindows: [(limit: Int, seconds: Double, key: String)] {
        var windows: [(limit: Int, seconds: Double, key: String)] = []
        if let limit = maxPerSecond { windows.append((limit, 1, "max_per_second")) }
        if let limit = maxPerMinute { windows.append((limit, 60, "max_per_minute")) }
        if let limit = maxPerHour { windows.append((limit, 3_600, "max_per_hour")) }
        if let limit = maxPerDay { windows.append((limit, 86_400, "max_per_day")) }
        return windows
    }
}
