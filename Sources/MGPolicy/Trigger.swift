/// One trigger of `circuit_breaker`, `emergency_stop` or `anomaly_detection`: a condition over the run's
/// metrics, checked after every settled call and at least once a second, and what to do when it holds.
public struct Trigger: Sendable {
    public enum Action: String, Sendable, CaseIterable {
        /// Freeze the agent for `cooldown_minutes`, or until `mg-run resume` without one.
        case pause
        case pauseAndAlert = "pause_and_alert"
        case pauseAgent = "pause_agent"
        /// A warning line in mg-run's log.
        case alert
        /// Deny the operation that repeats, with a message saying it loops, until another one happens.
        case breakLoop = "break_loop"
        /// Halve every count limit for `cooldown_minutes`, or for the rest of the run without one.
        case reduceRateLimit = "reduce_rate_limit"
        case reduceRateLimits = "reduce_rate_limits"
        /// Lower the per-call token cap of LLM calls to the median of the latest calls, for the cooldown.
        case capTokens = "cap_tokens"
        /// Stop the run.
        case kill
    }

    /// One step of `circuit_breaker.on_trip`, or a target of `emergency_stop.notify`, taken on every trip.
    public enum Step: Sendable, Equatable {
        /// Log the trip at this level: debug, info, warning or error.
        case log(String)
        /// Send the trip to this alert channel (a warning line naming it).
        case notify(String)
        /// Write the run's totals at the moment of the trip to the audit log.
        case saveState
    }

    /// The section and name, such as `circuit_breaker.triggers[0] (loop)`, for the log and the audit log.
    public var name: String
    public var condition: Condition
    public var action: Action
    public var cooldownSeconds: Double?
    public var steps: [Step]

    public init(name: String, condition: Condition, action: Action, cooldownSeconds: Double? = nil, steps: [Step] = []) {
        self.name = name
        self.condition = condition
        self.action = action
        self.cooldownSeconds = cooldownSeconds
        self.steps = steps
    }
}

extension PolicyLoader {
    static let triggerActions = Trigger.Action.allCases.map(\.rawValue)

    /// Reads the three trigger sections into one list, in the order they are written.
    static func readTriggers(_ top: [String: YAMLNode], namedLists: [String: ExpressionValue], defaultAction: Trigger.Action?,
                             reader: inout SchemaReader) -> [Trigger] {
        var triggers: [Trigger] = []
        func action(_ node: YAMLNode?, path: String, owner: YAMLNode) -> Trigger.Action? {
            guard let node else {
                if let defaultAction { return defaultAction }
                reader.fail(owner, path, "missing key 'action'; use one of \(triggerActions.joined(separator: ", ")), or set run.on_trip for every trigger")
                return nil
            }
            guard let text = reader.string(node, path: "\(path).action") else { return nil }
            return reader.choice(node, path: "\(path).action", among: triggerActions).flatMap(Trigger.Action.init(rawValue:))
        }
        func condition(_ node: YAMLNode?, path: String, owner: YAMLNode) -> Condition? {
            guard let node else {
                reader.fail(owner, path, "missing key 'condition'; give an expression such as \"same_action_repeated > 5\"")
                return nil
            }
            return reader.conditions(node, path: "\(path).condition", namedLists: namedLists).first
        }
        if let node = top["circuit_breaker"],
           let breaker = reader.mapping(node, path: "circuit_breaker", supported: ["triggers", "on_trip"]) {
            var steps: [Trigger.Step] = []
            if let stepsNode = breaker["on_trip"], let items = reader.sequence(stepsNode, path: "circuit_breaker.on_trip") {
                for (index, step) in items.enumerated() {
                    let path = "circuit_breaker.on_trip[\(index)]"
                    guard let fields = reader.mapping(step, path: path, supported: ["log", "notify", "save_state"]) else { continue }
                    guard fields.count == 1 else {
                        reader.fail(step, path, "give one step per item, such as {log: warning}, {notify: ops-slack} or {save_state: true}")
                        continue
                    }
                    if let level = fields["log"] {
                        if let text = reader.choice(level, path: "\(path).log", among: ["debug", "info", "warning", "error"]) { steps.append(.log(text)) }
                    } else if let target = fields["notify"] {
                        if let text = reader.string(target, path: "\(path).notify") { steps.append(.notify(text)) }
                    } else if let save = fields["save_state"], reader.boolean(save, path: "\(path).save_state") == true {
                        steps.append(.saveState)
                    }
                }
            }
            for (index, item) in (breaker["triggers"].flatMap { reader.sequence($0, path: "circuit_breaker.triggers") } ?? []).enumerated() {
                let path = "circuit_breaker.triggers[\(index)]"
                guard let fields = reader.mapping(item, path: path, supported: ["name", "condition", "action", "cooldown_minutes"]) else { continue }
                let name = fields["name"].flatMap { reader.string($0, path: "\(path).name") }
                let cooldown = fields["cooldown_minutes"].flatMap { reader.count($0, path: "\(path).cooldown_minutes") }
                guard let test = condition(fields["condition"], path: path, owner: item), let act = action(fields["action"], path: path, owner: item) else { continue }
                triggers.append(Trigger(name: "\(path)\(name.map { " (\($0))" } ?? "")", condition: test, action: act,
                                        cooldownSeconds: cooldown.map { Double($0) * 60 }, steps: steps))
            }
        }
        if let node = top["emergency_stop"],
           let stop = reader.mapping(node, path: "emergency_stop", supported: ["trigger", "action", "notify"]) {
            let act = action(stop["action"], path: "emergency_stop", owner: node)
            // `notify` names one alert channel or a list of them.
            var targets: [String] = []
            if let notifyNode = stop["notify"] {
                if notifyNode.scalarText != nil {
                    targets = reader.string(notifyNode, path: "emergency_stop.notify").map { [$0] } ?? []
                } else {
                    targets = reader.strings(notifyNode, path: "emergency_stop.notify") ?? []
                }
            }
            for (index, item) in (stop["trigger"].flatMap { reader.sequence($0, path: "emergency_stop.trigger") } ?? []).enumerated() {
                guard let test = reader.conditions(item, path: "emergency_stop.trigger[\(index)]", namedLists: namedLists).first, let act else { continue }
                triggers.append(Trigger(name: "emergency_stop.trigger[\(index)]", condition: test, action: act, steps: targets.map { .notify($0) }))
            }
        }
        if let node = top["anomaly_detection"],
           let anomaly = reader.mapping(node, path: "anomaly_detection", supported: ["enabled", "patterns"]) {
            let enabled = anomaly["enabled"].flatMap { reader.boolean($0, path: "anomaly_detection.enabled") } ?? true
            for (index, item) in (anomaly["patterns"].flatMap { reader.sequence($0, path: "anomaly_detection.patterns") } ?? []).enumerated() {
                let path = "anomaly_detection.patterns[\(index)]"
                guard let fields = reader.mapping(item, path: path, supported: ["name", "condition", "action"]) else { continue }
                let name = fields["name"].flatMap { reader.string($0, path: "\(path).name") }
                guard let test = condition(fields["condition"], path: path, owner: item), let act = action(fields["action"], path: path, owner: item),
                      enabled else { continue }
                triggers.append(Trigger(name: "\(path)\(name.map { " (\($0))" } ?? "")", condition: test, action: act))
            }
        }
        return triggers
    }
}
