import Testing
@testable import MGPolicy

private func load(_ yaml: String) throws(PolicyErrors) -> Optimization? {
    try PolicyLoader.parse(text: "rules: [{action: \"llm:*\"}]\noptimization:\n" + yaml + "\n", file: "o.yaml").optimization
}

private func errors(_ yaml: String) -> [String] {
    do {
        _ = try load(yaml)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

@Suite struct OptimizationLoadingTests {
    @Test func loadsModelFallback() throws {
        let loaded = try #require(try load("""
              model_fallback:
                enabled: true
                rules:
                  - when: "cost_today > 10"
                    fallback: {from: "llm:gpt-4*", to: "llm:gpt-4o-mini", for_actions: ["llm:completion"]}
            """))
        #expect(loaded.modelFallbacks.count == 1)
        #expect(loaded.modelFallbacks[0].from == "llm:gpt-4*")
        #expect(loaded.modelFallbacks[0].to == "gpt-4o-mini")
        #expect(loaded.modelFallbacks[0].when?.text == "cost_today > 10")
        #expect(loaded.modelFallbacks[0].path == "optimization.model_fallback.rules[0]")
    }

    @Test func disabledFallbackIsKeptOff() throws {
        let loaded = try load("  model_fallback:\n    enabled: false\n    rules: [{fallback: {from: \"llm:a\", to: \"llm:b\"}}]")
        #expect(loaded?.modelFallbacks.isEmpty == true)
    }

    @Test func loadsContextTrimming() throws {
        let loaded = try load("  context_trimming: {enabled: true, max_context_tokens: 8000, trim_strategy: keep_recent_and_important}")
        #expect(loaded?.maxContextTokens == 8000)
    }

    @Test func disabledTrimmingIsOff() throws {
        #expect(try load("  context_trimming: {enabled: false, max_context_tokens: 8000}")?.maxContextTokens == nil)
    }

    @Test func trimmingNeedsLimit() {
        #expect(errors("  context_trimming: {enabled: true}").first?.contains("missing key 'max_context_tokens'") == true)
    }

    @Test func unknownStrategySuggestsFix() {
        let found = errors("  context_trimming: {max_context_tokens: 10, trim_strategy: keep_recent_and_importnt}")
        #expect(found.first?.contains("did you mean 'keep_recent_and_important'?") == true)
    }

    @Test func badWhenIsReportedWithPath() {
        let found = errors("  model_fallback:\n    rules:\n      - when: \"cost_todya > 1\"\n        fallback: {from: \"llm:a\", to: \"llm:b\"}")
        #expect(found.first?.contains("optimization.model_fallback.rules[0].when: unknown identifier 'cost_todya'") == true)
    }

    @Test func globTargetIsError() {
        let found = errors("  model_fallback:\n    rules: [{fallback: {from: \"llm:a\", to: \"llm:b*\"}}]")
        #expect(found.first?.contains("without globs") == true)
    }

    @Test func missingFallbackIsError() {
        #expect(errors("  model_fallback:\n    rules: [{when: \"cost_today > 1\"}]").first?.contains("missing key 'fallback'") == true)
    }
}

@Suite struct ModelFallbackTests {
    @Test func coversByFromAndForActions() {
        let fallback = ModelFallback(when: nil, from: "llm:gpt-4*", to: "gpt-4o-mini", forActions: ["llm:completion"], path: "p")
        #expect(fallback.covers(["llm:gpt-4o", "llm:completion"]))
        #expect(!fallback.covers(["llm:gpt-4o", "llm:embedding"]))
        #expect(!fallback.covers(["llm:o3", "llm:completion"]))
    }
}

@Suite struct WindowKindLoadingTests {
    @Test func fixedWindowLoads() throws {
        let policy = try PolicyLoader.parse(text: "rules: [{action: \"llm:*\", rate_limit: {max_per_hour: 5, window: fixed}}]", file: "w.yaml")
        #expect(policy.rules[0].rateLimit.fixedWindows)
    }

    @Test func rollingIsDefault() throws {
        let policy = try PolicyLoader.parse(text: "rules: [{action: \"llm:*\", rate_limit: {max_per_hour: 5}}]", file: "w.yaml")
        #expect(!policy.rules[0].rateLimit.fixedWindows)
    }
}
