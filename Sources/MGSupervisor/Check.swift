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
            ]
            let set = windows.compactMap { name, value in value.map { "\(name) \($0)" } }
            if !set.isEmpty { windowLines.append("  \(rule.path) also: \(set.joined(separator: ", "))") }
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let cells = row.enumerated().map { column, cell in cell.padding(toLength: widths[column], withPad: " ", startingAt: 0) }
            lines.append("  " + cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
        lines += windowLines
        return lines.joined(separator: "\n") + "\n"
    }
}
