import Foundation

/// Loads MeshGuard policy files. Every key of the format is recognised. Keys
/// that this version does not enforce are rejected as "not supported yet",
/// because a limit that is silently ignored is a budget leak.
public enum PolicyLoader {
    static let metadataKeys = ["name", "version", "description", "owner", "approved_by", "last_updated", "rationale", "changelog"]
    static let supportedTopLevel = metadataKeys + ["rules", "on_limit_exceeded", "default_effect", "global_rate_limit", "rate_limit", "prices", "unknown_model", "budget",
                                                   "agent_match", "optimization", "upstreams", "scaling", "time_restrictions", "run",
                                                   "circuit_breaker", "emergency_stop", "anomaly_detection"]
    static let notSupportedTopLevel = [
        "approval_required",
        "cost_tracking",
    ]
    static let supportedRuleKeys = ["action", "effect", "rate_limit", "cost_ceiling", "behavioral_limits", "essential", "name", "description", "requires",
                                     "conditions", "audit"]
    static let supportedRateLimitKeys = [
        "max_per_second", "max_per_minute", "max_per_hour", "max_per_day", "max_per_task", "max_concurrent",
        "max_tokens_per_call", "max_input_tokens_per_call", "max_output_tokens_per_call",
        "max_tokens_per_minute", "max_tokens_per_hour", "max_tokens_per_day",
        "max_consecutive", "cooldown_seconds", "cooldown_after_limit", "window",
        "max_retries", "retry_delay_seconds", "max_consecutive_failures",
        "max_usd_per_call", "max_usd_per_task", "max_usd_per_minute", "max_usd_per_hour", "max_usd_per_day", "max_depth",
    ]
    static let supportedCeilingKeys = ["max_usd_per_call", "max_usd_per_task", "max_usd_per_minute", "max_usd_per_hour", "max_usd_per_day"]
    static let supportedOnLimitKeys = ["action", "message_to_agent", "queue_timeout_seconds", "strategy", "fallback_chain", "notify"]

    public static func load(file: String) throws(PolicyErrors) -> Policy {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), isDirectory.boolValue {
            throw PolicyErrors([PolicyError(position: SourcePosition(file: file, line: 1, column: 1), path: "",
                                            message: "is a directory, not a policy file; give --policy a YAML file such as profiles/basic.yaml")])
        }
        if !FileManager.default.fileExists(atPath: file) {
            throw PolicyErrors([PolicyError(position: SourcePosition(file: file, line: 1, column: 1), path: "",
                                            message: "no such file; check the path given to --policy")])
        }
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw PolicyErrors([PolicyError(
                position: SourcePosition(file: file, line: 1, column: 1), path: "",
                message: "cannot read the policy file: \(error.localizedDescription); check the path given to --policy")])
        }
        return try parse(text: text, file: file)
    }

    public static func parse(text: String, file: String) throws(PolicyErrors) -> Policy {
        let root: YAMLNode
        do {
            root = try YAMLLoader.load(text: text, file: file)
        } catch {
            throw PolicyErrors([PolicyError(position: error.position, path: "", message: error.message)])
        }
        var reader = SchemaReader()
        let policy = read(root, file: file, reader: &reader)
        if !reader.errors.isEmpty { throw PolicyErrors(reader.sortedErrors) }
        return policy
    }

    static func read(_ root: YAMLNode, file: String, reader: inout SchemaReader) -> Policy {
        var policy = Policy(file: file)
        // Any other top-level key whose value is a list of scalars is a named list for conditions.
        let isNamedList: (String, YAMLNode) -> Bool = { _, value in
            guard case .sequence(let items) = value.value else { return false }
            return items.allSatisfy { $0.scalarText != nil }
        }
        guard let top = reader.mapping(root, path: "", supported: supportedTopLevel, notSupportedYet: notSupportedTopLevel,
                                       allowUnknown: isNamedList)
        else { return policy }

        for (key, node) in top where !supportedTopLevel.contains(key) {
            if let list = ExpressionValue(yamlList: node) { policy.namedLists[key] = list }
        }
        for key in metadataKeys where key != "changelog" {
            guard let node = top[key] else { continue }
            if let text = node.scalarText {
                policy.metadata[key] = text
            } else {
                reader.fail(node, key, "expected a string, got \(node.kindName)")
            }
        }
        // changelog: a list of {version, date, changes: [string]}, shown nowhere but checked like the rest.
        if let node = top["changelog"], let entries = reader.sequence(node, path: "changelog") {
            for (index, entry) in entries.enumerated() {
                let path = "changelog[\(index)]"
                guard let fields = reader.mapping(entry, path: path, supported: ["version", "date", "changes"]) else { continue }
                for key in ["version", "date"] {
                    if let value = fields[key] { _ = reader.string(value, path: "\(path).\(key)") }
                }
                if let changes = fields["changes"] { _ = reader.strings(changes, path: "\(path).changes") }
            }
            policy.metadata["changelog"] = "\(entries.count) entries"
        }
        if let node = top["default_effect"], let text = reader.choice(node, path: "default_effect", among: ["allow", "deny"]) {
            policy.defaultEffect = Effect(rawValue: text) ?? .deny
        }
        if let node = top["rules"], let items = reader.sequence(node, path: "rules") {
            for (index, item) in items.enumerated() {
                if let rule = readRule(item, path: "rules[\(index)]", namedLists: policy.namedLists, reader: &reader) {
                    policy.rules.append(rule)
                }
            }
        }
        if top["global_rate_limit"] != nil, let node = top["rate_limit"] {
            reader.fail(node, "rate_limit", "both global_rate_limit and rate_limit are set, and they mean the same; keep one of them")
        }
        for key in ["global_rate_limit", "rate_limit"] {
            guard let node = top[key] else { continue }
            var rule = Rule(action: "*", position: node.position, path: key)
            var dollars: CostCeiling
            (rule.rateLimit, dollars) = readRateLimit(node, path: key, reader: &reader)
            // Ceilings here name their own section in messages, not cost_ceiling.
            dollars.perCallSection = ""
            dollars.perTaskSection = ""
            dollars.windowSection = ""
            rule.costCeiling = dollars
            policy.globalRule = rule
        }
        if let node = top["budget"] {
            policy.budget = readBudget(node, reader: &reader)
        }
        if let node = top["unknown_model"], let choice = reader.choice(node, path: "unknown_model", among: ["deny", "allow_free"]) {
            policy.unknownModelAllowFree = choice == "allow_free"
        }
        if let node = top["prices"] {
            if case .mapping(let pairs) = node.value {
                var seen: [String: Int] = [:]
                for (keyNode, valueNode) in pairs {
                    guard let glob = reader.string(keyNode, path: "prices") else { continue }
                    if let line = seen.updateValue(keyNode.position.line, forKey: glob) {
                        reader.fail(keyNode, "prices", "duplicate key '\(glob)' (first at line \(line)); remove one of them")
                        continue
                    }
                    if let price = PriceTable.readPrice(valueNode, path: "prices.\(glob)", reader: &reader) {
                        policy.priceOverrides.append((glob, price))
                    }
                }
            } else {
                reader.fail(node, "prices", "expected a mapping from model glob to price, got \(node.kindName)")
            }
        }
        if let node = top["on_limit_exceeded"] {
            policy.onLimitExceeded = readOnLimitExceeded(node, reader: &reader)
        }
        if let node = top["agent_match"] {
            policy.agentMatch = readAgentMatch(node, reader: &reader)
        }
        if let node = top["upstreams"], let providers = reader.mapping(node, path: "upstreams", supported: ["openai", "anthropic"],
                                                                       notSupportedYet: ["tavily", "serpapi", "brave"]) {
            for (name, providerNode) in providers {
                let path = "upstreams.\(name)"
                guard let fields = reader.mapping(providerNode, path: path, supported: ["base_url", "api_key_env"]) else { continue }
                guard let urlNode = fields["base_url"], let url = reader.string(urlNode, path: "\(path).base_url") else {
                    if fields["base_url"] == nil { reader.fail(providerNode, path, "missing key 'base_url'; such as https://api.openai.com/v1") }
                    continue
                }
                guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                    reader.fail(urlNode, "\(path).base_url", "'\(url)' is not an http:// or https:// URL")
                    continue
                }
                let variable = fields["api_key_env"].flatMap { reader.string($0, path: "\(path).api_key_env") }
                if let variable, variable.isEmpty || !variable.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), let keyNode = fields["api_key_env"] {
                    reader.fail(keyNode, "\(path).api_key_env", "'\(variable)' is not an environment variable name; give the name, not the key")
                }
                policy.upstreams[name] = (url, variable)
            }
        }
        if let node = top["scaling"] {
            if case .mapping(let pairs) = node.value {
                var seen: [String: Int] = [:]
                for (nameNode, tierNode) in pairs {
                    guard let name = reader.string(nameNode, path: "scaling") else { continue }
                    if let line = seen.updateValue(nameNode.position.line, forKey: name) {
                        reader.fail(nameNode, "scaling", "duplicate key '\(name)' (first at line \(line)); remove one of them")
                        continue
                    }
                    let path = "scaling.\(name)"
                    guard let fields = reader.mapping(tierNode, path: path, supported: ["agents", "daily_budget", "per_agent_limit", "dedicated_support"]) else { continue }
                    policy.scaling.append((
                        name,
                        fields["agents"].flatMap { reader.count($0, path: "\(path).agents") },
                        fields["daily_budget"].flatMap { reader.dollars($0, path: "\(path).daily_budget") },
                        fields["per_agent_limit"].flatMap { reader.dollars($0, path: "\(path).per_agent_limit") },
                        fields["dedicated_support"].flatMap { reader.boolean($0, path: "\(path).dedicated_support") }))
                }
            } else {
                reader.fail(node, "scaling", "expected a mapping of tier names to {agents, daily_budget, per_agent_limit, dedicated_support}, got \(node.kindName)")
            }
        }
        if let node = top["run"] {
            policy.run = readRunSettings(node, reader: &reader)
            // A relative profile file is read beside the policy, wherever mg-run runs from.
            if let profile = policy.run?.sandboxProfile, SeccompRules.namesFile(profile), !profile.hasPrefix("/") {
                let directory = URL(fileURLWithPath: file).deletingLastPathComponent()
                policy.run?.sandboxProfile = directory.appendingPathComponent(profile).standardizedFileURL.path
            }
        }
        policy.triggers = readTriggers(top, namedLists: policy.namedLists, defaultAction: policy.run?.onTrip, reader: &reader)
        if let node = top["time_restrictions"] {
            policy.timeRestrictions = readTimeRestrictions(node, reader: &reader)
        }
        if let node = top["optimization"] {
            policy.optimization = readOptimization(node, namedLists: policy.namedLists, reader: &reader)
        }
        return policy
    }

    static func readRunSettings(_ node: YAMLNode, reader: inout SchemaReader) -> RunSettings? {
        guard let keys = reader.mapping(node, path: "run", supported: ["max_duration", "kill_grace_seconds", "sandbox", "code_execute", "on_trip"])
        else { return nil }
        var settings = RunSettings()
        if let tripNode = keys["on_trip"] {
            settings.onTrip = reader.choice(tripNode, path: "run.on_trip", among: ["pause", "kill"]).flatMap(Trigger.Action.init(rawValue:))
        }
        if let durationNode = keys["max_duration"], let text = reader.string(durationNode, path: "run.max_duration") {
            if let seconds = RunSettings.durationSeconds(text) {
                settings.maxDurationSeconds = seconds
            } else {
                reader.fail(durationNode, "run.max_duration", "invalid duration '\(text)'; use a number with a unit: 90s, 30m or 8h")
            }
        }
        if let graceNode = keys["kill_grace_seconds"], let seconds = reader.count(graceNode, path: "run.kill_grace_seconds") {
            settings.killGraceSeconds = Double(min(seconds, 3_600))
        }
        if let sandboxNode = keys["sandbox"],
           let sandbox = reader.mapping(sandboxNode, path: "run.sandbox", supported: ["network", "rlimits", "profile", "writable"]) {
            if let networkNode = sandbox["network"] {
                settings.network = reader.choice(networkNode, path: "run.sandbox.network", among: ["proxy_only", "none", "host"])
            }
            if let profileNode = sandbox["profile"], let profile = reader.string(profileNode, path: "run.sandbox.profile") {
                if ["agent", "strict", "none"].contains(profile) || profile.hasSuffix(".seccomp") {
                    settings.sandboxProfile = profile
                } else {
                    reader.fail(profileNode, "run.sandbox.profile", "unknown profile '\(profile)'; use agent, strict, none, or the path of a .seccomp file")
                }
            }
            if let writableNode = sandbox["writable"], let paths = reader.strings(writableNode, path: "run.sandbox.writable") {
                if let relative = paths.first(where: { !$0.hasPrefix("/") }) {
                    reader.fail(writableNode, "run.sandbox.writable", "'\(relative)' is not an absolute path; write it from /, such as /srv/agent-work")
                } else {
                    settings.writable = paths
                }
            }
            let limitKeys = ["cpu_seconds", "memory_mb", "open_files", "file_size_mb", "processes"]
            if let limitsNode = sandbox["rlimits"],
               let limits = reader.mapping(limitsNode, path: "run.sandbox.rlimits", supported: limitKeys) {
                for key in limitKeys {
                    guard let valueNode = limits[key], let value = reader.count(valueNode, path: "run.sandbox.rlimits.\(key)") else { continue }
                    if value == 0 {
                        reader.fail(valueNode, "run.sandbox.rlimits.\(key)", "must be at least 1; remove the key for no limit")
                    } else {
                        settings.rlimits[key] = value
                    }
                }
            }
        }
        if let codeNode = keys["code_execute"],
           let code = reader.mapping(codeNode, path: "run.code_execute", supported: ["interpreters"], notSupportedYet: ["profile"]) {
            var execute = CodeExecuteSettings()
            if let namesNode = code["interpreters"], let names = reader.strings(namesNode, path: "run.code_execute.interpreters") {
                if let bad = names.first(where: { $0.isEmpty || $0.contains("/") }) {
                    reader.fail(namesNode, "run.code_execute.interpreters", "'\(bad)' is not a program name; list names such as python3 or node, without a directory")
                } else {
                    execute.interpreters = names
                }
            }
            settings.codeExecute = execute
        }
        return settings
    }

    static func readTimeRestrictions(_ node: YAMLNode, reader: inout SchemaReader) -> TimeRestrictions? {
        let path = "time_restrictions"
        guard let keys = reader.mapping(node, path: path, supported: ["allowed_hours", "allowed_days", "timezone", "on_violation", "violation_message"]) else {
            return nil
        }
        var restrictions = TimeRestrictions(startHour: 0, endHour: 0)
        var valid = true
        if let hoursNode = keys["allowed_hours"], let hours = reader.mapping(hoursNode, path: "\(path).allowed_hours", supported: ["start", "end"]) {
            for (key, field) in [("start", \TimeRestrictions.startHour), ("end", \TimeRestrictions.endHour)] {
                guard let valueNode = hours[key] else {
                    reader.fail(hoursNode, "\(path).allowed_hours", "missing key '\(key)'; write allowed_hours: {start: 9, end: 17}")
                    valid = false
                    continue
                }
                guard let hour = reader.count(valueNode, path: "\(path).allowed_hours.\(key)") else { valid = false; continue }
                if hour > 24 {
                    reader.fail(valueNode, "\(path).allowed_hours.\(key)", "must be an hour from 0 to 24, got \(hour)")
                    valid = false
                }
                restrictions[keyPath: field] = hour % 24
            }
        } else if keys["allowed_hours"] == nil {
            reader.fail(node, path, "missing key 'allowed_hours'; write allowed_hours: {start: 9, end: 17}")
            valid = false
        }
        if let daysNode = keys["allowed_days"], let items = reader.sequence(daysNode, path: "\(path).allowed_days") {
            var days = Set<Int>()
            for (index, item) in items.enumerated() {
                if let name = reader.choice(item, path: "\(path).allowed_days[\(index)]", among: TimeRestrictions.dayNames) {
                    days.insert(TimeRestrictions.dayNames.firstIndex(of: name)! + 1)
                }
            }
            restrictions.days = days
        }
        if let zoneNode = keys["timezone"], let name = reader.string(zoneNode, path: "\(path).timezone") {
            if let zone = TimeZone(identifier: name) {
                restrictions.timeZone = zone
            } else {
                reader.fail(zoneNode, "\(path).timezone", "unknown time zone '\(name)'; use an IANA name such as Europe/Berlin or UTC")
            }
        }
        if let violationNode = keys["on_violation"],
           let name = reader.choice(violationNode, path: "\(path).on_violation", among: TimeRestrictions.Violation.allCases.map(\.rawValue)) {
            restrictions.onViolation = TimeRestrictions.Violation(rawValue: name) ?? .deny
        }
        if let messageNode = keys["violation_message"] {
            restrictions.message = reader.string(messageNode, path: "\(path).violation_message")
        }
        return valid ? restrictions : nil
    }

    static func readOptimization(_ node: YAMLNode, namedLists: [String: ExpressionValue], reader: inout SchemaReader) -> Optimization? {
        guard let keys = reader.mapping(node, path: "optimization", supported: ["model_fallback", "context_trimming"]) else { return nil }
        var result = Optimization()
        func enabled(_ fields: [String: YAMLNode], _ path: String) -> Bool {
            fields["enabled"].flatMap { reader.boolean($0, path: "\(path).enabled") } ?? true
        }
        if let fallbackNode = keys["model_fallback"] {
            let path = "optimization.model_fallback"
            if let fields = reader.mapping(fallbackNode, path: path, supported: ["enabled", "rules"]) {
                let on = enabled(fields, path)
                for (index, item) in (fields["rules"].flatMap { reader.sequence($0, path: "\(path).rules") } ?? []).enumerated() {
                    let itemPath = "\(path).rules[\(index)]"
                    guard let rule = reader.mapping(item, path: itemPath, supported: ["when", "fallback"]) else { continue }
                    let when = rule["when"].flatMap { reader.conditions($0, path: "\(itemPath).when", namedLists: namedLists).first }
                    guard let targetNode = rule["fallback"] else {
                        reader.fail(item, itemPath, "missing key 'fallback'; write fallback: {from: \"llm:gpt-4o\", to: \"llm:gpt-4o-mini\"}")
                        continue
                    }
                    guard let target = reader.mapping(targetNode, path: "\(itemPath).fallback", supported: ["from", "to", "for_actions"]) else { continue }
                    let from = target["from"].flatMap { reader.string($0, path: "\(itemPath).fallback.from") }
                    let to = target["to"].flatMap { reader.string($0, path: "\(itemPath).fallback.to") }
                    let forActions = target["for_actions"].flatMap { reader.strings($0, path: "\(itemPath).fallback.for_actions") } ?? []
                    for key in ["from", "to"] where target[key] == nil {
                        reader.fail(targetNode, "\(itemPath).fallback", "missing key '\(key)'; write {from: \"llm:gpt-4o\", to: \"llm:gpt-4o-mini\"}")
                    }
                    if let from, !from.hasPrefix("llm:"), let fromNode = target["from"] {
                        reader.fail(fromNode, "\(itemPath).fallback.from", "'\(from)' is not an LLM action; write llm:<model>, such as \"llm:gpt-4o\"")
                    }
                    if let to, !to.hasPrefix("llm:") || to.contains("*") || to.count <= 4, let toNode = target["to"] {
                        reader.fail(toNode, "\(itemPath).fallback.to", "'\(to)' is not a model; write llm:<model> without globs, such as \"llm:gpt-4o-mini\"")
                    }
                    if on, let from, let to, from.hasPrefix("llm:"), to.hasPrefix("llm:") {
                        result.modelFallbacks.append(ModelFallback(when: when, from: from, to: String(to.dropFirst(4)), forActions: forActions, path: itemPath))
                    }
                }
            }
        }
        if let trimNode = keys["context_trimming"] {
            let path = "optimization.context_trimming"
            if let fields = reader.mapping(trimNode, path: path, supported: ["enabled", "max_context_tokens", "trim_strategy"]) {
                let on = enabled(fields, path)
                if let strategy = fields["trim_strategy"] {
                    _ = reader.choice(strategy, path: "\(path).trim_strategy", among: ["keep_recent_and_important"])
                }
                if let limitNode = fields["max_context_tokens"], let limit = reader.count(limitNode, path: "\(path).max_context_tokens") {
                    if limit < 1 { reader.fail(limitNode, "\(path).max_context_tokens", "must be at least 1, got 0") }
                    if on { result.maxContextTokens = limit }
                } else if on && fields["max_context_tokens"] == nil {
                    reader.fail(trimNode, path, "missing key 'max_context_tokens'; give the largest input, in tokens, a call may keep")
                }
            }
        }
        return result
    }

    static func readAgentMatch(_ node: YAMLNode, reader: inout SchemaReader) -> AgentMatch? {
        let path = "agent_match"
        guard let keys = reader.mapping(node, path: path, supported: ["tags", "environment", "tokens", "trust_tier"]) else { return nil }
        var match = AgentMatch()
        if let tagsNode = keys["tags"] {
            match.tags = reader.strings(tagsNode, path: "\(path).tags") ?? []
        }
        if let environmentNode = keys["environment"] {
            // One name or a list of names.
            match.environments = environmentNode.scalarText != nil
                ? reader.string(environmentNode, path: "\(path).environment").map { [$0] }
                : reader.strings(environmentNode, path: "\(path).environment")
        }
        if let tokensNode = keys["tokens"] {
            match.tokens = reader.strings(tokensNode, path: "\(path).tokens")
        }
        if let tierNode = keys["trust_tier"] {
            let tiers = TrustTier.allCases.map(\.description)
            if let tier = reader.mapping(tierNode, path: "\(path).trust_tier", supported: ["min"]) {
                if let minimumNode = tier["min"], let name = reader.choice(minimumNode, path: "\(path).trust_tier.min", among: tiers) {
                    match.minimumTrustTier = TrustTier(name: name)
                } else if tier["min"] == nil {
                    reader.fail(tierNode, "\(path).trust_tier", "missing key 'min'; write trust_tier: {min: verified} with one of \(tiers.joined(separator: ", "))")
                }
            }
        }
        return match
    }

    static func readRule(_ node: YAMLNode, path: String, namedLists: [String: ExpressionValue] = [:], reader: inout SchemaReader) -> Rule? {
        guard let keys = reader.mapping(node, path: path, supported: supportedRuleKeys) else { return nil }
        guard let actionNode = keys["action"] else {
            reader.fail(node, path, "missing key 'action'; add a glob such as action: \"llm:*\"")
            return nil
        }
        guard let action = reader.string(actionNode, path: "\(path).action") else { return nil }
        if action.isEmpty {
            reader.fail(actionNode, "\(path).action", "must not be empty; use \"*\" to match every action")
        }
        var rule = Rule(action: action, position: node.position, path: path)
        if let effectNode = keys["effect"], let text = reader.choice(effectNode, path: "\(path).effect", among: ["allow", "deny"]) {
            rule.effect = Effect(rawValue: text) ?? .allow
        }
        var rateLimitDollars = CostCeiling()
        if let limitNode = keys["rate_limit"] {
            (rule.rateLimit, rateLimitDollars) = readRateLimit(limitNode, path: "\(path).rate_limit", reader: &reader)
        }
        if let ceilingNode = keys["cost_ceiling"] {
            rule.costCeiling = readCostCeiling(ceilingNode, path: "\(path).cost_ceiling", reader: &reader)
        }
        rule.costCeiling.merge(perCall: rateLimitDollars.maxUSDPerCall, perTask: rateLimitDollars.maxUSDPerTask)
        rule.costCeiling.mergeWindows(perMinute: rateLimitDollars.maxUSDPerMinute, perHour: rateLimitDollars.maxUSDPerHour,
                                      perDay: rateLimitDollars.maxUSDPerDay)
        if let behaviorNode = keys["behavioral_limits"],
           let behavior = reader.mapping(behaviorNode, path: "\(path).behavioral_limits",
                                         supported: ["require_conclusion_after", "max_consecutive_research", "max_iterations_per_topic"]) {
            func count(_ key: String) -> Int? { behavior[key].flatMap { reader.count($0, path: "\(path).behavioral_limits.\(key)") } }
            rule.requireConclusionAfter = count("require_conclusion_after")
            rule.maxConsecutiveResearch = count("max_consecutive_research")
            rule.maxIterationsPerTopic = count("max_iterations_per_topic")
        }
        if let essentialNode = keys["essential"], let essential = reader.boolean(essentialNode, path: "\(path).essential") {
            rule.essential = essential
        }
        if let auditNode = keys["audit"], let level = reader.choice(auditNode, path: "\(path).audit", among: AuditLevel.allCases.map(\.rawValue)) {
            rule.audit = AuditLevel(rawValue: level) ?? .basic
        }
        if let conditionsNode = keys["conditions"] {
            rule.conditions = reader.conditions(conditionsNode, path: "\(path).conditions", namedLists: namedLists)
        }
        if let requiresNode = keys["requires"] {
            if case .mapping(let pairs) = requiresNode.value {
                var seen: [String: Int] = [:]
                for (keyNode, valueNode) in pairs {
                    guard let key = reader.string(keyNode, path: "\(path).requires") else { continue }
                    if let line = seen.updateValue(keyNode.position.line, forKey: key) {
                        reader.fail(keyNode, "\(path).requires", "duplicate key '\(key)' (first at line \(line)); remove one of them")
                    } else if let value = valueNode.scalarText {
                        rule.requires.append((key, value))
                    } else {
                        reader.fail(valueNode, "\(path).requires.\(key)", "expected a single value such as true or verified, got \(valueNode.kindName)")
                    }
                }
            } else {
                reader.fail(requiresNode, "\(path).requires", "expected a mapping of context names to values, such as {delegation_approved: true}, got \(requiresNode.kindName)")
            }
        }
        for key in ["name", "description"] {
            if let metadataNode = keys[key] { _ = reader.string(metadataNode, path: "\(path).\(key)") }
        }
        return rule
    }

    /// Reads a rate-limit object; its dollar keys are returned apart, because they mean the same as `cost_ceiling`'s.
    static func readRateLimit(_ node: YAMLNode, path: String, reader: inout SchemaReader) -> (RateLimit, CostCeiling) {
        var limit = RateLimit()
        guard let keys = reader.mapping(node, path: path, supported: supportedRateLimitKeys) else {
            return (limit, CostCeiling())
        }
        func count(_ key: String) -> Int? {
            keys[key].flatMap { reader.count($0, path: "\(path).\(key)") }
        }
        let counts: [(String, WritableKeyPath<RateLimit, Int?>)] = [
            ("max_per_second", \.maxPerSecond), ("max_per_minute", \.maxPerMinute), ("max_per_hour", \.maxPerHour),
            ("max_per_day", \.maxPerDay), ("max_per_task", \.maxPerTask), ("max_concurrent", \.maxConcurrent), ("max_depth", \.maxDepth),
            ("max_tokens_per_call", \.maxTokensPerCall), ("max_input_tokens_per_call", \.maxInputTokensPerCall),
            ("max_output_tokens_per_call", \.maxOutputTokensPerCall), ("max_tokens_per_minute", \.maxTokensPerMinute),
            ("max_tokens_per_hour", \.maxTokensPerHour), ("max_tokens_per_day", \.maxTokensPerDay), ("max_consecutive", \.maxConsecutive),
            ("max_retries", \.maxRetries), ("retry_delay_seconds", \.retryDelaySeconds), ("max_consecutive_failures", \.maxConsecutiveFailures),
        ]
        for (key, field) in counts {
            limit[keyPath: field] = count(key)
        }
        // Both spellings mean the same; the longer one wins.
        let cooldowns = [count("cooldown_seconds"), count("cooldown_after_limit")].compactMap { $0 }
        limit.cooldownSeconds = cooldowns.max()
        if let windowNode = keys["window"], let kind = reader.choice(windowNode, path: "\(path).window", among: ["rolling", "fixed"]) {
            limit.fixedWindows = kind == "fixed"
        }
        return (limit, readDollars(keys, path: path, reader: &reader))
    }

    static func readCostCeiling(_ node: YAMLNode, path: String, reader: inout SchemaReader) -> CostCeiling {
        guard let keys = reader.mapping(node, path: path, supported: supportedCeilingKeys) else { return CostCeiling() }
        return readDollars(keys, path: path, reader: &reader)
    }

    /// Reads the `max_usd_per_*` keys, which `cost_ceiling` and `rate_limit` share.
    static func readDollars(_ keys: [String: YAMLNode], path: String, reader: inout SchemaReader) -> CostCeiling {
        func dollars(_ key: String) -> USD? {
            keys[key].flatMap { reader.dollars($0, path: "\(path).\(key)") }
        }
        var ceiling = CostCeiling(maxUSDPerCall: dollars("max_usd_per_call"), maxUSDPerTask: dollars("max_usd_per_task"))
        ceiling.maxUSDPerMinute = dollars("max_usd_per_minute")
        ceiling.maxUSDPerHour = dollars("max_usd_per_hour")
        ceiling.maxUSDPerDay = dollars("max_usd_per_day")
        return ceiling
    }

    static func readBudget(_ node: YAMLNode, reader: inout SchemaReader) -> Budget? {
        let keys = ["daily_limit_usd", "warning_threshold_percent", "critical_threshold_percent", "on_warning", "on_critical"]
        guard let fields = reader.mapping(node, path: "budget", supported: keys) else { return nil }
        // Every part is read even when the limit is missing or invalid, so all errors are reported at once.
        var limit: USD?
        if let limitNode = fields["daily_limit_usd"] {
            limit = reader.dollars(limitNode, path: "budget.daily_limit_usd")
        } else {
            reader.fail(node, "budget", "missing key 'daily_limit_usd'; the thresholds are percentages of it")
        }
        var budget = Budget(dailyLimit: limit ?? .zero, position: node.position)
        for (key, field) in [("warning_threshold_percent", \Budget.warningPercent), ("critical_threshold_percent", \Budget.criticalPercent)] {
            guard let valueNode = fields[key], let percent = reader.count(valueNode, path: "budget.\(key)") else { continue }
            if percent > 100 {
                reader.fail(valueNode, "budget.\(key)", "must be at most 100, got \(percent)")
            }
            budget[keyPath: field] = percent
        }
        if let warning = budget.warningPercent, let critical = budget.criticalPercent, warning > critical, let node = fields["warning_threshold_percent"] {
            reader.fail(node, "budget.warning_threshold_percent", "\(warning) is above critical_threshold_percent (\(critical)); the warning must come first")
        }
        budget.onWarning = fields["on_warning"].map { readBudgetActions($0, path: "budget.on_warning", reader: &reader) } ?? []
        budget.onCritical = fields["on_critical"].map { readBudgetActions($0, path: "budget.on_critical", reader: &reader) } ?? []
        return limit == nil ? nil : budget
    }

    static func readBudgetActions(_ node: YAMLNode, path: String, reader: inout SchemaReader) -> [BudgetAction] {
        guard let items = reader.sequence(node, path: path) else { return [] }
        var actions: [BudgetAction] = []
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            if case .mapping = item.value {
                guard let fields = reader.mapping(item, path: itemPath, supported: ["reduce_rate_limits_by"]),
                      let valueNode = fields["reduce_rate_limits_by"],
                      let percent = reader.count(valueNode, path: "\(itemPath).reduce_rate_limits_by")
                else { continue }
                if percent > 100 { reader.fail(valueNode, "\(itemPath).reduce_rate_limits_by", "must be at most 100, got \(percent)") }
                actions.append(.reduceRateLimitsBy(percent: min(percent, 100)))
                continue
            }
            guard let name = reader.choice(item, path: itemPath, among: ["pause_non_essential", "notify_ops", "kill", "pause"]) else { continue }
            switch name {
            case "pause_non_essential": actions.append(.pauseNonEssential)
            case "notify_ops": actions.append(.notifyOps)
            case "kill": actions.append(.kill)
            default: actions.append(.pause)
            }
        }
        return actions
    }

    static func readOnLimitExceeded(_ node: YAMLNode, reader: inout SchemaReader) -> OnLimitExceeded? {
        let path = "on_limit_exceeded"
        guard let keys = reader.mapping(node, path: path, supported: supportedOnLimitKeys) else { return nil }
        var result = OnLimitExceeded()
        if let actionNode = keys["action"] {
            let all = ["deny", "graceful_conclude", "queue", "pause", "kill"]
            if let text = reader.choice(actionNode, path: "\(path).action", among: all) {
                result.action = LimitResponse(rawValue: text) ?? .deny
            }
        }
        if let messageNode = keys["message_to_agent"], let message = reader.string(messageNode, path: "\(path).message_to_agent") {
            result.messageToAgent = message
        }
        if let timeoutNode = keys["queue_timeout_seconds"], let seconds = reader.count(timeoutNode, path: "\(path).queue_timeout_seconds") {
            result.queueTimeoutSeconds = Double(seconds)
        }
        let strategy = keys["strategy"].flatMap { reader.choice($0, path: "\(path).strategy", among: ["graceful_degradation"]) }
        if let chainNode = keys["fallback_chain"] {
            if strategy == nil && keys["strategy"] == nil {
                reader.fail(chainNode, "\(path).fallback_chain", "needs strategy: graceful_degradation beside it; add that line")
            }
            result.fallbackChain = readFallbackChain(chainNode, path: "\(path).fallback_chain", reader: &reader)
        } else if let strategyNode = keys["strategy"], strategy != nil {
            reader.fail(strategyNode, "\(path).strategy", "graceful_degradation needs a fallback_chain list of {from, to, when} beside it")
        }
        if let notifyNode = keys["notify"], let items = reader.sequence(notifyNode, path: "\(path).notify") {
            for (index, item) in items.enumerated() {
                let itemPath = "\(path).notify[\(index)]"
                guard let fields = reader.mapping(item, path: itemPath, supported: ["channel", "message"]) else { continue }
                let channels = ["log", "slack", "pagerduty", "webhook", "email", "command"]
                guard let channelNode = fields["channel"], let channel = reader.choice(channelNode, path: "\(itemPath).channel", among: channels) else {
                    if fields["channel"] == nil { reader.fail(item, itemPath, "missing key 'channel'; use channel: log") }
                    continue
                }
                if channel != "log" {
                    reader.fail(channelNode, "\(itemPath).channel", "'\(channel)' is not supported yet by this version of mg-run; use log")
                }
                let message = fields["message"].flatMap { reader.string($0, path: "\(itemPath).message") }
                    ?? "{action} hit {limit_type} (agent {agent_id}, task {task_id}, {current_cost} USD so far)"
                result.notify.append(LimitNotification(channel: channel, message: message))
            }
        }
        return result
    }

    static func readFallbackChain(_ node: YAMLNode, path: String, reader: inout SchemaReader) -> [FallbackStep] {
        guard let items = reader.sequence(node, path: path) else { return [] }
        var steps: [FallbackStep] = []
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let fields = reader.mapping(item, path: itemPath, supported: ["from", "to", "when"]) else { continue }
            var from: String?
            var to: FallbackStep.Target?
            for key in ["from", "to"] where fields[key] == nil {
                reader.fail(item, itemPath, "missing key '\(key)'; write {from: \"llm:gpt-4o\", to: \"llm:gpt-4o-mini\", when: cost_limit_hit}")
            }
            if let fromNode = fields["from"], let text = reader.string(fromNode, path: "\(itemPath).from") {
                if text.hasPrefix("llm:") && text.count > 4 {
                    from = text
                } else {
                    reader.fail(fromNode, "\(itemPath).from", "'\(text)' is not an LLM action; write llm:<model>, such as \"llm:gpt-4o\" or \"llm:gpt-4*\"")
                }
            }
            if let toNode = fields["to"], let text = reader.string(toNode, path: "\(itemPath).to") {
                if text == "queue" {
                    to = .queue
                } else if text.hasPrefix("llm:") && text.count > 4 && !text.contains("*") {
                    to = .model(String(text.dropFirst(4)))
                } else {
                    reader.fail(toNode, "\(itemPath).to", "'\(text)' is not a model; write llm:<model> without globs, such as \"llm:gpt-4o-mini\", or queue")
                }
            }
            var when = LimitKind.any
            if let whenNode = fields["when"], let text = reader.choice(whenNode, path: "\(itemPath).when", among: ["cost_limit_hit", "rate_limit_hit", "all_limits_hit"]) {
                when = LimitKind(rawValue: text) ?? .any
            }
            if let from, let to { steps.append(FallbackStep(from: from, to: to, when: when)) }
        }
        return steps
    }
}
