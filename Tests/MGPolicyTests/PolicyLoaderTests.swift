import Foundation
import Testing
@testable import MGPolicy

private func errors(of text: String, file: String = "policy.yaml") -> [String] {
    do {
        _ = try PolicyLoader.parse(text: text, file: file)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

@Suite struct PolicyLoaderTests {
    @Test func loadsSupportedKeys() throws {
        let policy = try PolicyLoader.parse(text: """
            name: test
            version: 2
            default_effect: allow
            allowed_domains: [example.com, docs.example.com]
            rules:
              - action: "llm:*"
                rate_limit: {max_per_minute: 10, max_per_hour: 100, max_per_day: 1000, max_per_task: 50, max_tokens_per_call: 4000}
                cost_ceiling: {max_usd_per_call: 0.25, max_usd_per_task: 2.5}
              - action: "search:*"
                effect: deny
            on_limit_exceeded:
              action: graceful_conclude
              message_to_agent: "wrap up"
            """, file: "p.yaml")
        #expect(policy.metadata["name"] == "test")
        #expect(policy.metadata["version"] == "2")
        #expect(policy.defaultEffect == .allow)
        #expect(policy.rules.count == 2)
        #expect(policy.rules[0].rateLimit == RateLimit(maxPerMinute: 10, maxPerHour: 100, maxPerDay: 1000, maxPerTask: 50, maxTokensPerCall: 4000))
        #expect(policy.rules[0].costCeiling.maxUSDPerCall == USD(picodollars: 250_000_000_000))
        #expect(policy.rules[0].costCeiling.maxUSDPerTask == USD(picodollars: 2_500_000_000_000))
        #expect(policy.rules[0].position.line == 6)
        #expect(policy.rules[1].effect == .deny)
        #expect(policy.onLimitExceeded?.action == .gracefulConclude)
        #expect(policy.onLimitExceeded?.messageToAgent == "wrap up")
    }

    @Test func loadsPerCallAndConcurrencyLimits() throws {
        let policy = try PolicyLoader.parse(text: """
            rules:
              - action: "llm:*"
                rate_limit: {max_per_second: 2, max_concurrent: 3, max_input_tokens_per_call: 900, max_output_tokens_per_call: 500,
                             max_usd_per_call: 0.10, max_usd_per_task: 5}
                cost_ceiling: {max_usd_per_task: 2}
            """, file: "p.yaml")
        let rule = policy.rules[0]
        #expect(rule.rateLimit.maxPerSecond == 2)
        #expect(rule.rateLimit.maxConcurrent == 3)
        #expect(rule.rateLimit.maxInputTokensPerCall == 900)
        #expect(rule.rateLimit.maxOutputTokensPerCall == 500)
        #expect(rule.costCeiling.maxUSDPerCall == USD(decimalText: "0.10"))
        #expect(rule.costCeiling.perCallSection == "rate_limit")
        // The lower of the two task ceilings wins, and its section is kept for messages.
        #expect(rule.costCeiling.maxUSDPerTask == USD(decimalText: "2"))
        #expect(rule.costCeiling.perTaskSection == "cost_ceiling")
    }

    @Test func loadsWindowsAndGlobalLimit() throws {
        let policy = try PolicyLoader.parse(text: """
            global_rate_limit: {max_per_minute: 100, max_tokens_per_hour: 50000, max_usd_per_day: 3}
            rules:
              - action: "llm:*"
                rate_limit: {max_tokens_per_minute: 9000, max_tokens_per_day: 900000, max_usd_per_minute: 0.5}
                cost_ceiling: {max_usd_per_hour: 2, max_usd_per_minute: 1}
            """, file: "p.yaml")
        let rule = policy.rules[0]
        #expect(rule.rateLimit.maxTokensPerMinute == 9000)
        #expect(rule.rateLimit.maxTokensPerDay == 900000)
        #expect(rule.costCeiling.maxUSDPerMinute == USD(decimalText: "0.5"))
        #expect(rule.costCeiling.windowSection == "rate_limit")
        #expect(rule.costCeiling.maxUSDPerHour == USD(decimalText: "2"))
        let global = try #require(policy.globalRule)
        #expect(global.path == "global_rate_limit")
        #expect(global.limitsPath == "global_rate_limit")
        #expect(global.rateLimit.maxPerMinute == 100)
        #expect(global.rateLimit.maxTokensPerHour == 50000)
        #expect(global.costCeiling.maxUSDPerDay == USD(decimalText: "3"))
        #expect(global.ceilingPath("max_usd_per_day", section: global.costCeiling.windowSection) == "global_rate_limit.max_usd_per_day")
    }

    @Test func consecutiveCooldownAndWindowKind() throws {
        let policy = try PolicyLoader.parse(text: """
            rules:
              - action: "llm:*"
                rate_limit: {max_consecutive: 4, cooldown_seconds: 30, cooldown_after_limit: 90, window: rolling}
            """, file: "p.yaml")
        #expect(policy.rules[0].rateLimit.maxConsecutive == 4)
        #expect(policy.rules[0].rateLimit.cooldownSeconds == 90)
        let found = errors(of: "rules:\n  - action: x\n    rate_limit: {window: fixd}\n")
        #expect(found == ["policy.yaml:3:26: rules[0].rate_limit.window: invalid value 'fixd'; expected one of rolling, fixed (did you mean 'fixed'?)"])
    }

    @Test func priceOverridesByGlob() throws {
        let policy = try PolicyLoader.parse(text: """
            rules: [{action: "llm:*"}]
            prices:
              "local-*": {input_per_mtok: 0.5, output_per_mtok: 1, max_output_tokens: 2048}
              search-api: {per_call: 0.008}
            """, file: "p.yaml")
        #expect(policy.priceOverrides.map(\.glob) == ["local-*", "search-api"])
        var table = PriceTable(models: ["gpt-4o": ModelPrice(inputPerToken: 1, outputPerToken: 2)])
        table.overrides = policy.priceOverrides
        #expect(table.price(for: "local-llama")?.outputPerToken == 1_000_000)
        #expect(table.price(for: "local-llama")?.maxOutputTokens == 2048)
        #expect(table.price(for: "search-api")?.perCall == 8_000_000_000)
        #expect(table.price(for: "gpt-4o")?.inputPerToken == 1)
        // An entry cannot make a listed model cheaper; it can make it dearer.
        table.overrides.append(("gpt-4o", ModelPrice(inputPerToken: 0, outputPerToken: 5, maxOutputTokens: 99)))
        #expect(table.price(for: "gpt-4o")?.inputPerToken == 1)
        #expect(table.price(for: "gpt-4o")?.outputPerToken == 5)
        #expect(table.price(for: "gpt-4o")?.maxOutputTokens == 4096)
        let found = errors(of: "rules: [{action: x}]\nprices:\n  m: {output_per_mtok: 1}\n  m: {per_call: 1}\n")
        #expect(found.count == 2)
        #expect(found[0].hasPrefix("policy.yaml:3:6: prices.m: missing key 'input_per_mtok'"))
        #expect(found[1] == "policy.yaml:4:3: prices: duplicate key 'm' (first at line 3); remove one of them")
    }

    @Test func unknownModelChoice() throws {
        #expect(try PolicyLoader.parse(text: "rules: [{action: x}]\nunknown_model: allow_free\n", file: "p.yaml").unknownModelAllowFree == true)
        #expect(try PolicyLoader.parse(text: "rules: [{action: x}]\nunknown_model: deny\n", file: "p.yaml").unknownModelAllowFree == false)
        #expect(try PolicyLoader.parse(text: "rules: [{action: x}]\n", file: "p.yaml").unknownModelAllowFree == nil)
        #expect(errors(of: "unknown_model: allow\n").first?.hasPrefix("policy.yaml:1:16: unknown_model: invalid value 'allow'") == true)
    }

    @Test func budgetWithThresholds() throws {
        let policy = try PolicyLoader.parse(text: """
            rules: [{action: "llm:*", essential: true}]
            budget:
              daily_limit_usd: 10
              warning_threshold_percent: 80
              critical_threshold_percent: 95
              on_warning: [notify_ops, {reduce_rate_limits_by: 50}]
              on_critical: [pause_non_essential, kill]
            """, file: "p.yaml")
        let budget = try #require(policy.budget)
        #expect(budget.dailyLimit == USD(decimalText: "10"))
        #expect(budget.warningPercent == 80)
        #expect(budget.criticalPercent == 95)
        #expect(budget.onWarning == [.notifyOps, .reduceRateLimitsBy(percent: 50)])
        #expect(budget.onCritical == [.pauseNonEssential, .kill])
        #expect(policy.rules[0].essential)
        let found = errors(of: "budget: {warning_threshold_percent: 120, on_critical: [pause]}\n")
        #expect(found.count == 2)
        #expect(found[0] == "policy.yaml:1:9: budget: missing key 'daily_limit_usd'; the thresholds are percentages of it")
        #expect(found[1] == "policy.yaml:1:37: budget.warning_threshold_percent: must be at most 100, got 120")
        let paused = try PolicyLoader.parse(text: "budget: {daily_limit_usd: 1, on_critical: [pause]}\nrules: [{action: x}]\n", file: "p.yaml")
        #expect(paused.budget?.onCritical == [.pause])
        let hidden = errors(of: "budget: {daily_limit_usd: -5, on_warning: [notify_op], warning_threshold_percent: 90, critical_threshold_percent: 50}\n")
        #expect(hidden.count == 3)
        #expect(hidden[0].hasPrefix("policy.yaml:1:27: budget.daily_limit_usd: must not be negative"))
        #expect(hidden[1].hasPrefix("policy.yaml:1:44: budget.on_warning[0]: invalid value 'notify_op'"))
        #expect(hidden[2] == "policy.yaml:1:83: budget.warning_threshold_percent: 90 is above critical_threshold_percent (50); the warning must come first")
        let more = errors(of: "budget: {daily_limit_usd: 1, warning_threshold_percent: 120, on_critical: [pause, notify_opps]}\n")
        #expect(more.count == 2)
        #expect(more[0] == "policy.yaml:1:57: budget.warning_threshold_percent: must be at most 100, got 120")
        #expect(more[1].hasPrefix("policy.yaml:1:83: budget.on_critical[1]: invalid value 'notify_opps'"))
    }

    @Test func bothGlobalSpellingsRejected() {
        let found = errors(of: "global_rate_limit: {max_per_minute: 1}\nrate_limit: {max_per_minute: 2}\n")
        #expect(found == ["policy.yaml:2:13: rate_limit: both global_rate_limit and rate_limit are set, and they mean the same; keep one of them"])
    }

    @Test func unknownKeySuggestsSpelling() {
        let found = errors(of: """
            rules:
              - action: "llm:*"
                rate_limit:
                  max_per_minit: 20
            """)
        #expect(found == ["policy.yaml:4:7: rules[0].rate_limit: unknown key 'max_per_minit' (did you mean 'max_per_minute'?)"])
    }

    @Test func unknownTopLevelKeyListsNothingCloseAsList() {
        let found = errors(of: "rulez:\n  - action: x\n")
        #expect(found == ["policy.yaml:1:1: rulez: unknown key 'rulez' (did you mean 'rules'?)"])
    }

    @Test func quotedCountIsWrongType() {
        let found = errors(of: """
            rules:
              - action: "llm:*"
                rate_limit: {max_per_minute: "20"}
            """)
        #expect(found == ["policy.yaml:3:34: rules[0].rate_limit.max_per_minute: expected a non-negative whole number, got the quoted string \"20\"; remove the quotes"])
    }

    @Test func negativeAndFractionalCounts() {
        let found = errors(of: """
            rules:
              - action: "llm:*"
                rate_limit:
                  max_per_hour: -1
                  max_per_day: 1.5
                cost_ceiling:
                  max_usd_per_task: -2
            """)
        #expect(found.count == 3)
        #expect(found[0] == "policy.yaml:4:21: rules[0].rate_limit.max_per_hour: must not be negative, got -1")
        #expect(found[1] == "policy.yaml:5:20: rules[0].rate_limit.max_per_day: expected a whole number, got 1.5")
        #expect(found[2] == "policy.yaml:7:25: rules[0].cost_ceiling.max_usd_per_task: must not be negative, got -2")
    }

    @Test func duplicateKeyNamesBothLines() {
        let found = errors(of: """
            rules:
              - action: "llm:*"
                rate_limit:
                  max_per_minute: 10
                  max_per_minute: 20
            """)
        #expect(found == ["policy.yaml:5:7: rules[0].rate_limit: duplicate key 'max_per_minute' (first at line 4); remove one of them"])
    }

    @Test func notYetSupportedKeysAreRejected() {
        let found = errors(of: """
            cost_tracking:
              track_by: [agent_id]
            rules:
              - action: "llm:*"
            approval_required: []
            run:
              code_execute: {interpreters: [python3], profile: strict}
            """)
        #expect(found.count == 3)
        #expect(found[0].hasPrefix("policy.yaml:1:1: cost_tracking: is not supported yet by this version of mg-run"))
        #expect(found[1].hasPrefix("policy.yaml:5:1: approval_required: is not supported yet"))
        #expect(found[2].hasPrefix("policy.yaml:7:43: run.code_execute.profile: is not supported yet"))
    }

    @Test func reportsEveryErrorNotOnlyFirst() {
        let found = errors(of: """
            rules:
              - effect: allow
              - action: "llm:*"
                effect: alow
            approval_required: []
            """)
        #expect(found.count == 3)
        #expect(found[0] == "policy.yaml:2:5: rules[0]: missing key 'action'; add a glob such as action: \"llm:*\"")
        #expect(found[1] == "policy.yaml:4:13: rules[1].effect: invalid value 'alow'; expected one of allow, deny (did you mean 'allow'?)")
        #expect(found[2].hasPrefix("policy.yaml:5:1: approval_required: is not supported yet"))
    }

    @Test func invalidYAMLHasPosition() {
        let found = errors(of: "rules:\n  - action: [unclosed\n")
        #expect(found.count == 1)
        #expect(found[0].hasPrefix("policy.yaml:3:1: invalid YAML"))
    }

    @Test func shippedProfilesLoad() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let policy = try PolicyLoader.load(file: root.appendingPathComponent("profiles/basic.yaml").path)
        #expect(policy.rules.map(\.action) == ["llm:*", "code:execute"])
        let prices = try PriceTable.load(file: root.appendingPathComponent("profiles/prices.yaml").path)
        #expect(prices.asOf == "2026-12-04")
        #expect(prices.price(for: "gpt-4o") != nil)
    }
}

@Suite struct GlobTests {
    @Test(arguments: [
        ("llm:*", "llm:gpt-4o", true),
        ("*", "anything:at:all", true),
        ("llm:gpt-4*", "llm:gpt-4o-mini", true),
        ("llm:gpt-4*", "llm:claude", false),
        ("llm:*:mini", "llm:gpt:4o:mini", true),
        ("llm:completion", "llm:completion", true),
        ("llm:completion", "llm:completions", false),
        ("", "", true),
        ("a*b*c", "abbbc", true),
        ("a*b*c", "acb", false),
    ])
    func matches(pattern: String, name: String, expected: Bool) {
        #expect(Rule(action: pattern).matches(name) == expected)
    }
}

@Suite struct PriceTableTests {
    let table = try! PriceTable.parse(text: """
        as_of: "2026-12-04"
        models:
          gpt-4o: {input_per_mtok: 2.50, output_per_mtok: 10.00, cached_input_per_mtok: 1.25, max_output_tokens: 16384}
          gpt-4o-mini: {input_per_mtok: 0.15, output_per_mtok: 0.60}
          gpt-4: {input_per_mtok: 30, output_per_mtok: 60}
          claude-x: {input_per_mtok: 3, output_per_mtok: 15, cache_write_per_mtok: 3.75, cache_write_1h_per_mtok: 7}
        """, file: "prices.yaml")

    @Test func oneHourWritePrice() {
        #expect(table.price(for: "claude-x")?.cacheWrite1hPerToken == 7_000_000)
        #expect(table.price(for: "gpt-4o")?.cacheWrite1hPerToken == 5_000_000)
    }

    @Test func exactAndDatedIds() {
        #expect(table.price(for: "gpt-4o")?.inputPerToken == 2_500_000)
        #expect(table.price(for: "gpt-4o-mini-2024-07-18")?.inputPerToken == 150_000)
        #expect(table.price(for: "gpt-4o-2024-08-06")?.outputPerToken == 10_000_000)
        #expect(table.price(for: "gpt-4-0613")?.inputPerToken == 30_000_000)
        #expect(table.price(for: "gpt-4o-20240806")?.inputPerToken == 2_500_000)
    }

    @Test func otherVariantsAreNotPriced() {
        #expect(table.price(for: "gpt-4o-audio-preview") == nil)
        #expect(table.price(for: "gpt-4-32k") == nil)
        #expect(table.price(for: "gpt-4o-mini-search-preview") == nil)
    }

    @Test func prefixMustEndAtDash() {
        #expect(table.price(for: "gpt-4.5-preview") == nil)
        #expect(table.price(for: "gpt-4omni") == nil)
        #expect(table.price(for: "unknown") == nil)
    }

    @Test func cachedPriceDefaultsToInput() {
        #expect(table.price(for: "gpt-4o")?.cachedInputPerToken == 1_250_000)
        #expect(table.price(for: "gpt-4o-mini")?.cachedInputPerToken == 150_000)
    }

    @Test func missingInputPriceIsError() {
        #expect(throws: PolicyErrors.self) {
            try PriceTable.parse(text: "models:\n  m: {output_per_mtok: 1}\n", file: "p.yaml")
        }
    }
}

@Suite struct USDTests {
    @Test(arguments: [("0.50", Int64(500_000_000_000)), ("2", 2_000_000_000_000), ("1e-3", 1_000_000_000), ("0.000000000001", 1)])
    func parses(text: String, picodollars: Int64) {
        #expect(USD(decimalText: text)?.picodollars == picodollars)
    }

    @Test(arguments: ["-1", "abc", "", "1,5", "+2"])
    func rejects(text: String) {
        #expect(USD(decimalText: text) == nil)
    }

    @Test func formats() {
        #expect(USD(picodollars: 500_000_000_000).description == "0.5")
        #expect(USD(picodollars: 2_000_000_000_000).description == "2")
        #expect(USD(picodollars: 150_000).description == "0.00000015")
        #expect(USD(picodollars: 127_950_000).description == "0.00012795")
    }
}
