import Testing
@testable import MGPolicy

private func load(_ yaml: String) throws -> OnLimitExceeded? {
    try PolicyLoader.parse(text: "rules: [{action: \"llm:*\"}]\non_limit_exceeded:\n" + yaml + "\n", file: "p.yaml").onLimitExceeded
}

private func errors(_ yaml: String) -> [String] {
    do {
        _ = try PolicyLoader.parse(text: "on_limit_exceeded:\n" + yaml + "\n", file: "p.yaml")
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

@Suite struct OnLimitExceededLoadingTests {
    @Test func loadsFallbackChain() throws {
        let loaded = try #require(try load("""
              strategy: graceful_degradation
              fallback_chain:
                - {from: "llm:gpt-4*", to: "llm:gpt-4o-mini", when: cost_limit_hit}
                - {from: "llm:gpt-4o-mini", to: queue, when: rate_limit_hit}
                - {from: "llm:claude-*", to: "llm:claude-3-5-haiku-latest"}
            """))
        #expect(loaded.fallbackChain == [
            FallbackStep(from: "llm:gpt-4*", to: .model("gpt-4o-mini"), when: .cost),
            FallbackStep(from: "llm:gpt-4o-mini", to: .queue, when: .rate),
            FallbackStep(from: "llm:claude-*", to: .model("claude-3-5-haiku-latest"), when: .any),
        ])
    }

    @Test func loadsNotifyWithDefaultMessage() throws {
        let loaded = try #require(try load("  notify:\n    - {channel: log, message: \"{action} hit\"}\n    - {channel: log}"))
        #expect(loaded.notify.count == 2)
        #expect(loaded.notify[0] == LimitNotification(channel: "log", message: "{action} hit"))
        #expect(loaded.notify[1].message.contains("{limit_type}"))
    }

    @Test func loadsKill() throws {
        #expect(try load("  action: kill")?.action == .kill)
    }

    @Test func loadsPause() throws {
        #expect(try load("  action: pause")?.action == .pause)
    }

    @Test func chainWithoutStrategyIsError() {
        #expect(errors("  fallback_chain: [{from: \"llm:a\", to: \"llm:b\"}]") == [
            "p.yaml:2:19: on_limit_exceeded.fallback_chain: needs strategy: graceful_degradation beside it; add that line",
        ])
    }

    @Test func strategyWithoutChainIsError() {
        #expect(errors("  strategy: graceful_degradation").first?.contains("needs a fallback_chain") == true)
    }

    @Test func misspelledStrategySuggestsFix() {
        #expect(errors("  strategy: graceful_degredation\n  fallback_chain: []").first?.contains("did you mean 'graceful_degradation'?") == true)
    }

    @Test func fromMustBeLLMAction() {
        let found = errors("  strategy: graceful_degradation\n  fallback_chain: [{from: \"gpt-4o\", to: \"llm:b\"}]")
        #expect(found == ["p.yaml:3:27: on_limit_exceeded.fallback_chain[0].from: 'gpt-4o' is not an LLM action; write llm:<model>, such as \"llm:gpt-4o\" or \"llm:gpt-4*\""])
    }

    @Test func toMustNotBeGlob() {
        let found = errors("  strategy: graceful_degradation\n  fallback_chain: [{from: \"llm:a\", to: \"llm:b*\"}]")
        #expect(found.first?.contains("write llm:<model> without globs") == true)
    }

    @Test func missingToIsError() {
        let found = errors("  strategy: graceful_degradation\n  fallback_chain: [{from: \"llm:a\"}]")
        #expect(found.first?.contains("missing key 'to'") == true)
    }

    @Test func unknownWhenSuggestsFix() {
        let found = errors("  strategy: graceful_degradation\n  fallback_chain: [{from: \"llm:a\", to: \"llm:b\", when: cost_limits_hit}]")
        #expect(found.first?.contains("did you mean 'cost_limit_hit'?") == true)
    }

    @Test func otherChannelsAreNotSupportedYet() {
        #expect(errors("  notify: [{channel: slack, message: hi}]").first?.contains("'slack' is not supported yet") == true)
    }

    @Test func notifyNeedsChannel() {
        #expect(errors("  notify: [{message: hi}]").first?.contains("missing key 'channel'") == true)
    }
}

@Suite struct FallbackStepTests {
    @Test func appliesByGlobAndKind() {
        let step = FallbackStep(from: "llm:gpt-4*", to: .model("gpt-4o-mini"), when: .cost)
        #expect(step.applies(to: "llm:gpt-4o", refusedBy: .cost))
        #expect(!step.applies(to: "llm:gpt-4o", refusedBy: .rate))
        #expect(!step.applies(to: "llm:o3", refusedBy: .cost))
    }

    @Test func anyKindApplies() {
        let step = FallbackStep(from: "llm:*", to: .queue, when: .any)
        #expect(step.applies(to: "llm:x", refusedBy: .rate))
        #expect(step.applies(to: "llm:x", refusedBy: .cost))
    }
}

@Suite struct RequiresLoadingTests {
    private func rule(_ yaml: String) throws -> Rule {
        try PolicyLoader.parse(text: "rules:\n  - action: \"delegate:*\"\n    requires:\n" + yaml + "\n", file: "p.yaml").rules[0]
    }

    private func errors(_ yaml: String) -> [String] {
        do {
            _ = try rule(yaml)
            return []
        } catch let error as PolicyErrors {
            return error.errors.map(\.description)
        } catch {
            return ["\(error)"]
        }
    }

    @Test func loadsValuesAsText() throws {
        let loaded = try rule("      delegation_approved: true\n      delegatee_trust_tier: verified")
        #expect(loaded.requires.map(\.key) == ["delegation_approved", "delegatee_trust_tier"])
        #expect(loaded.requires.map(\.value) == ["true", "verified"])
    }

    @Test func listValueIsError() {
        #expect(errors("      approvers: [a, b]") == ["p.yaml:4:18: rules[0].requires.approvers: expected a single value such as true or verified, got a list"])
    }

    @Test func duplicateKeyIsError() {
        #expect(errors("      a: true\n      a: false").first?.contains("duplicate key 'a' (first at line 4)") == true)
    }
}
