import Foundation
import MGPolicy

/// The run's recent operations, for the metrics of condition expressions.
///
/// Every admitted, refused, settled and failed operation of the last day is
/// kept, oldest first. Aggregates over the whole run are kept apart, so
/// `_task` and `_run` metrics need no history. It is used only under the
/// governor's lock, and it is a class so the state copies no event array.
final class CallHistory {
    enum Outcome {
        case pending, settled, failed, denied
    }

    struct Event {
        var time: Double
        var id: UInt64
        var action: String
        var fingerprint: UInt64
        var inputTokens: Int
        var outputTokens: Int
        /// Reserved until settled, then settled; zero for failed and denied operations.
        var cost: Int64
        var outcome: Outcome
    }

    struct Aggregate {
        var calls = 0
        var errors = 0
        var denials = 0
        var cost: Int64 = 0
        var inputTokens = 0
        var outputTokens = 0

        mutating func add(_ event: Event, sign: Int) {
            switch event.outcome {
            case .denied:
                denials += sign
            case .failed:
                calls += sign
                errors += sign
            case .pending, .settled:
                calls += sign
                cost += Int64(sign) * event.cost
                inputTokens += sign * event.inputTokens
                outputTokens += sign * event.outputTokens
            }
        }

        func value(_ measure: MetricMeasure) -> Double {
            switch measure {
            case .cost: return Double(cost) / 1e12
            case .calls: return Double(calls)
            case .tokens: return Double(inputTokens + outputTokens)
            case .inputTokens: return Double(inputTokens)
            case .outputTokens: return Double(outputTokens)
            case .errors: return Double(errors)
            // No calls, no errors: 0 rather than missing, so a condition on it does not fail closed at the start.
            case .errorRate: return calls == 0 ? 0 : Double(errors) / Double(calls)
            case .denials: return Double(denials)
            }
        }
    }

    /// How long events are kept: `avg_*` metrics read the trailing 24 hours.
    static let retention = 86_400.0 + 60

    private var events: [Event] = []
    private var start = 0
    private(set) var run = Aggregate()

    func record(_ event: Event) {
        events.append(event)
        run.add(event, sign: 1)
        while start < events.count && events[start].time < event.time - CallHistory.retention { start += 1 }
        if start > 4_096 && start * 2 > events.count {
            events.removeFirst(start)
            start = 0
        }
    }

    /// Replaces a pending operation's reserved amounts by its outcome.
    func update(id: UInt64, outcome: Outcome, inputTokens: Int = 0, outputTokens: Int = 0, cost: Int64 = 0) {
        var index = events.count - 1
        while index >= start {
            if events[index].id == id && events[index].outcome == .pending {
                run.add(events[index], sign: -1)
                events[index].outcome = outcome
                events[index].inputTokens = inputTokens
                events[index].outputTokens = outputTokens
                events[index].cost = cost
                run.add(events[index], sign: 1)
                return
            }
            index -= 1
        }
    }

    /// Returns the aggregate of the events admitted after `time`.
    func aggregate(after time: Double) -> Aggregate {
        var result = Aggregate()
        var index = events.count - 1
        while index >= start && events[index].time > time {
            result.add(events[index], sign: 1)
            index -= 1
        }
        return result
    }

    /// Returns the aggregate of the newest `count` calls, refused ones not counted.
    func aggregate(lastCalls count: Int) -> Aggregate {
        var result = Aggregate()
        var index = events.count - 1
        while index >= start && result.calls < count {
            if events[index].outcome != .denied { result.add(events[index], sign: 1) }
            index -= 1
        }
        return result
    }

    /// Returns how many of the newest operations in a row had this action and payload.
    func sameActionRepeated(action: String, fingerprint: UInt64) -> Int {
        var length = 0
        var index = events.count - 1
        while index >= start && events[index].action == action && events[index].fingerprint == fingerprint {
            length += 1
            index -= 1
        }
        return length
    }

    /// Returns how often the most frequent operation (action and payload) occurred after `time`.
    func sameActionCount(after time: Double) -> Int {
        var counts: [String: Int] = [:]
        var index = events.count - 1
        while index >= start && events[index].time > time {
            counts["\(events[index].fingerprint) \(events[index].action)", default: 0] += 1
            index -= 1
        }
        return counts.values.max() ?? 0
    }

    /// Returns the tokens of the newest settled call divided by those of the settled call `calls` before it.
    func tokensPerCallTrend(calls: Int) -> Double {
        var settled: [Int] = []
        var index = events.count - 1
        while index >= start && settled.count <= calls {
            if events[index].outcome == .settled { settled.append(events[index].inputTokens + events[index].outputTokens) }
            index -= 1
        }
        // Too few calls yet is no trend (1x) rather than missing, for the same reason.
        guard settled.count > calls, settled[calls] > 0 else { return 1 }
        return Double(settled[0]) / Double(settled[calls])
    }
}

/// What a condition reads when the governor decides one operation.
struct DecisionEnvironment: ExpressionEnvironment {
    let call: CallDescriptor
    let now: Double
    let identity: RunIdentity
    let taskID: String
    let history: CallHistory
    /// Calls of this task admitted so far, and those that write output.
    let taskCalls: Int
    let taskIterations: Int
    /// The call's pre-flight cost bound in dollars.
    let estimatedCost: Double
    /// Other runs' spend of this agent today, from the ledger, in dollars.
    let sharedCostToday: Double
    let averageTaskCost: Double?
    /// Whether `call` is being decided (it counts toward same_action_repeated) or was the last one (a trigger's check).
    var callIsPending = true

    func variable(_ name: String) -> ExpressionValue {
        switch name {
        case "time.hour", "time.minute", "time.weekday", "time.date":
            var seconds = time_t(now.rounded(.down))
            var parts = tm()
            gmtime_r(&seconds, &parts)
            switch name {
            case "time.hour": return .number(Double(parts.tm_hour))
            case "time.minute": return .number(Double(parts.tm_min))
            case "time.weekday": return .string(["sun", "mon", "tue", "wed", "thu", "fri", "sat"][Int(parts.tm_wday)])
            default: return .string(String(format: "%04d-%02d-%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday)))
            }
        case "request.model": return call.model.isEmpty ? .missing : .string(call.model)
        case "request.max_tokens": return call.requestedOutputTokens.map { .number(Double($0)) } ?? .missing
        case "request.input_tokens": return .number(Double(call.inputTokensEstimate))
        case "request.domain": return call.domain.map { .string($0) } ?? .missing
        case "request.path": return call.path.map { .string($0) } ?? .missing
        case "code.language": return call.code.map { .string($0.language) } ?? .missing
        case "code.sandbox": return call.code.map { .string($0.sandbox) } ?? .missing
        case "code.path": return call.code.map { .string($0.path) } ?? .missing
        case "agent.id": return .string(identity.agentID)
        case "agent.tags": return .list(identity.tags.map { .string($0) })
        case "agent.trust_tier": return .string(identity.trustTier.description)
        case "task.id": return .string(taskID)
        case "task.calls": return .number(Double(taskCalls))
        case "task.iterations": return .number(Double(taskIterations))
        case "estimated_cost_usd": return .number(estimatedCost)
        default:
            if name.hasPrefix("context."), let text = call.context[String(name.dropFirst(8))] {
                return DecisionEnvironment.contextValue(text)
            }
            return .missing
        }
    }

    /// Reads a context value given as text as the number or boolean it spells, else as a string.
    static func contextValue(_ text: String) -> ExpressionValue {
        if text == "true" { return .bool(true) }
        if text == "false" { return .bool(false) }
        if let number = Double(text), number.isFinite { return .number(number) }
        return .string(text)
    }

    func metric(_ metric: Metric) -> Double {
        switch metric {
        case .measure(let measure, let scope):
            switch scope {
            case .seconds(let seconds): return history.aggregate(after: now - seconds).value(measure)
            case .today:
                let today = history.aggregate(after: startOfDay.nextDown).value(measure)
                return measure == .cost ? today + sharedCostToday : today
            case .task, .run: return history.run.value(measure)
            case .calls(let count): return history.aggregate(lastCalls: count).value(measure)
            }
        case .average(let measure, let bucketSeconds):
            return history.aggregate(after: now - 86_400).value(measure) / (86_400 / bucketSeconds)
        case .costToday: return history.aggregate(after: startOfDay.nextDown).value(.cost) + sharedCostToday
        case .currentCost: return history.run.value(.cost)
        case .averageCost: return averageTaskCost ?? .nan
        // The operation being decided counts as the newest of the run.
        case .sameActionRepeated:
            return Double(history.sameActionRepeated(action: call.actions[0], fingerprint: call.fingerprint) + (callIsPending ? 1 : 0))
        case .sameActionCount(let seconds): return Double(history.sameActionCount(after: now - seconds))
        case .tokensPerCallTrend(let calls): return history.tokensPerCallTrend(calls: calls)
        }
    }

    /// Midnight UTC of the current day.
    // NOTE: days are UTC; the policy timezone of time_restrictions is not read yet.
    private var startOfDay: Double { (now / 86_400).rounded(.down) * 86_400 }
}
