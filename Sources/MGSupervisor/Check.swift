import Foundation
import MGPolicy

/// `mg-run check [--explain] FILE...`: validates policy files without running anything.
enum PolicyCheck {
    /// Prints every error of every file, one per line, and returns 0 when all files are valid, 1 otherwise.
    static func run(_ arguments: [String]) -> Int32 {
        var explain = false
        var files: [String] = []
        for argument in arguments {
            if argument == "--explain" {
                explain = true
            } else if argument.hasPrefix("-") {
                FileHandle.standardError.write(Data("mg-run: error: unknown option '\(argument)' for check; usage: mg-run check [--explain] FILE...\n".utf8))
                return ExitStatus.usage
            } else {
                files.append(argument)
            }
        }
        guard !files.isEmpty else {
            FileHandle.standardError.write(Data("mg-run: error: missing policy file; usage: mg-run check [--explain] FILE...\n".utf8))
            return ExitStatus.usage
        }

        var failed = false
        var output = ""
        for file in files {
            do {
                let policy = try PolicyLoader.load(file: file)
                let problems = sandboxProblems(policy)
                guard problems.isEmpty else {
                    failed = true
                    FileHandle.standardError.write(Data(problems.map { "\(file): \($0)\n" }.joined().utf8))
                    continue
                }
                output += "\(file): valid, \(policy.rules.count) rule\(policy.rules.count == 1 ? "" : "s")\n"
                if explain { output += explanation(of: policy) }
            } catch {
                failed = true
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
            }
        }
        FileHandle.standardOutput.write(Data(output.utf8))
        return failed ? 1 : 0
    }

    /// Returns what a run would reject at start about the files run.sandbox names: a seccomp profile
    /// file that cannot be read or compiled, and writable paths that do not exist.
    static func sandboxProblems(_ policy: Policy) -> [String] {
        var problems: [String] = []
        if let profile = policy.run?.sandboxProfile, profile != "none" {
            do {
                _ = try SeccompProfile.load(profile).program()
            } catch {
                problems.append("run.sandbox.profile: \(error.description)")
            }
        }
        for path in policy.run?.writable ?? [] where !FileManager.default.fileExists(atPath: path) {
            problems.append("run.sandbox.writable: '\(path)' not found; create it or remove it from the list")
        }
        return problems
    }

    /// Returns the policy's metadata and a table of the limits each rule sets.
    static func explanation(of policy: Policy) -> String {
        var lines: [String] = []
        for key in ["name", "version", "description", "owner"] {
            if let value = policy.metadata[key] { lines.append("  \(key): \(value)") }
        }
        lines.append("  applies to: \(policy.agentMatch?.description ?? "every run")")
        lines.append("  default_effect: \(policy.defaultEffect.rawValue)")
        let onLimit = policy.onLimitExceeded ?? OnLimitExceeded()
        lines.append("  on_limit_exceeded: \(onLimit.action.rawValue)")

        let header = ["rule", "action", "effect", "/second", "/minute", "/hour", "/day", "/task", "concurrent",
                      "tokens/call", "in/call", "out/call", "USD/call", "USD/task"]
        var rows = [header]
        var windowLines: [String] = []
        for rule in (policy.globalRule.map { [$0] } ?? []) + policy.rules {
            let limits = rule.rateLimit
            func count(_ value: Int?) -> String { value.map(String.init) ?? "-" }
            rows.append([
                // A global limit allows nothing, so it has no effect to show.
                rule.path, rule.action, rule.path == policy.globalRule?.path ? "-" : rule.effect.rawValue,
                count(limits.maxPerSecond), count(limits.maxPerMinute), count(limits.maxPerHour), count(limits.maxPerDay),
                count(limits.maxPerTask), count(limits.maxConcurrent),
                count(limits.maxTokensPerCall), count(limits.maxInputTokensPerCall), count(limits.maxOutputTokensPerCall),
                rule.costCeiling.maxUSDPerCall?.description ?? "-", rule.costCeiling.maxUSDPerTask?.description ?? "-",
            ])
            let windows: [(String, String?)] = [
                ("tokens/minute", limits.maxTokensPerMinute.map(String.init)), ("tokens/hour", limits.maxTokensPerHour.map(String.init)),
                ("tokens/day", limits.maxTokensPerDay.map(String.init)), ("USD/minute", rule.costCeiling.maxUSDPerMinute?.description),
                ("USD/hour", rule.costCeiling.maxUSDPerHour?.description), ("USD/day", rule.costCeiling.maxUSDPerDay?.description),
                ("consecutive", limits.maxConsecutive.map(String.init)), ("cooldown s", limits.cooldownSeconds.map(String.init)),
                ("retries", limits.maxRetries.map(String.init)), ("retry delay s", limits.retryDelaySeconds.map(String.init)),
                ("failures in a row", limits.maxConsecutiveFailures.map(String.init)),
                ("depth", limits.maxDepth.map(String.init)), ("windows", limits.fixedWindows ? "fixed" : nil),
                ("conclude after", rule.requireConclusionAfter.map(String.init)),
                ("research in a row", rule.maxConsecutiveResearch.map(String.init)),
                ("calls per topic", rule.maxIterationsPerTopic.map(String.init)),
                ("audit", rule.audit == .basic ? nil : rule.audit.rawValue), ("essential", rule.essential ? "yes" : nil),
            ]
            let set = windows.compactMap { name, value in value.map { "\(name) \($0)" } }
            if !set.isEmpty { windowLines.append("  \(rule.path) also: \(set.joined(separator: ", "))") }
            if !rule.conditions.isEmpty {
                windowLines.append("  \(rule.path) applies when: \(rule.conditions.map(\.text).joined(separator: " AND "))")
            }
            if !rule.requires.isEmpty {
                windowLines.append("  \(rule.path) requires: \(rule.requires.map { "\($0.key) = \($0.value)" }.joined(separator: ", "))")
            }
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let cells = row.enumerated().map { column, cell in cell.padding(toLength: widths[column], withPad: " ", startingAt: 0) }
            lines.append("  " + cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
        lines += windowLines
        lines += sectionLines(of: policy)
        return lines.joined(separator: "\n") + "\n"
    }

    /// Returns one line per layer-wide section that is set: budget, fallbacks, optimization, upstreams, scaling and named lists.
    static func sectionLines(of policy: Policy) -> [String] {
        var lines: [String] = []
        if let budget = policy.budget {
            var text = "  budget: \(budget.dailyLimit) USD a day"
            if let warning = budget.warningPercent { text += ", warning at \(warning)%" }
            if let critical = budget.criticalPercent { text += ", critical at \(critical)%" }
            lines.append(text)
        }
        let onLimit = policy.onLimitExceeded ?? OnLimitExceeded()
        for step in onLimit.fallbackChain {
            let target: String
            switch step.to {
            case .model(let model): target = "llm:\(model)"
            case .queue: target = "queue"
            }
            lines.append("  fallback: \(step.from) -> \(target) when \(step.when.rawValue)")
        }
        for notification in onLimit.notify {
            lines.append("  notify \(notification.channel): \(notification.message)")
        }
        for fallback in policy.optimization?.modelFallbacks ?? [] {
            lines.append("  model fallback: \(fallback.from) -> llm:\(fallback.to)\(fallback.when.map { " when \($0.text)" } ?? "")")
        }
        if let limit = policy.optimization?.maxContextTokens {
            lines.append("  context trimming: to \(limit) input tokens, keeping system messages and the newest turns")
        }
        for (name, upstream) in policy.upstreams.sorted(by: { $0.key < $1.key }) {
            lines.append("  upstream \(name): \(upstream.baseURL)\(upstream.keyVariable.map { " (key from $\($0))" } ?? "")")
        }
        for tier in policy.scaling {
            var parts: [String] = []
            if let agents = tier.agents { parts.append("\(agents) agents") }
            if let budget = tier.dailyBudget { parts.append("\(budget) USD a day") }
            if let limit = tier.perAgentLimit { parts.append("\(limit) USD per agent") }
            if tier.dedicatedSupport == true { parts.append("dedicated support") }
            lines.append("  scaling \(tier.name) (not enforced): \(parts.joined(separator: ", "))")
        }
        for (name, value) in policy.namedLists.sorted(by: { $0.key < $1.key }) {
            lines.append("  list \(name): \(value)")
        }
        return lines
    }
}
