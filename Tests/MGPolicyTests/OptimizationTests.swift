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

@Suite struct UpstreamsLoadingTests {
    private func errors(_ yaml: String) -> [String] {
        do {
            _ = try PolicyLoader.parse(text: yaml, file: "u.yaml")
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    @Test func loadsProviders() throws {
        let policy = try PolicyLoader.parse(text: """
            upstreams:
              openai: {base_url: "https://gateway.example/v1", api_key_env: TEAM_OPENAI_KEY}
              anthropic: {base_url: "http://127.0.0.1:8080"}
            """, file: "u.yaml")
        #expect(policy.upstreams["openai"]?.baseURL == "https://gateway.example/v1")
        #expect(policy.upstreams["openai"]?.keyVariable == "TEAM_OPENAI_KEY")
        #expect(policy.upstreams["anthropic"]?.keyVariable == nil)
    }

    @Test func keyValueInPolicyIsError() {
        let found = errors("upstreams:\n  openai: {base_url: \"https://x/v1\", api_key_env: \"sk-abc def\"}")
        #expect(found.first?.contains("is not an environment variable name") == true)
    }

    @Test func badURLIsError() {
        #expect(errors("upstreams:\n  openai: {base_url: \"ftp://x\"}").first?.contains("is not an http:// or https:// URL") == true)
    }

    @Test func searchProvidersAreNotSupportedYet() {
        #expect(errors("upstreams:\n  tavily: {base_url: \"https://x\"}").first?.contains("not supported yet") == true)
    }

    @Test func maxDepthLoads() throws {
        let policy = try PolicyLoader.parse(text: "rules: [{action: \"delegate:*\", rate_limit: {max_depth: 2}}]", file: "u.yaml")
        #expect(policy.rules[0].rateLimit.maxDepth == 2)
    }
}

@Suite struct AuditLevelLoadingTests {
    @Test func levelsLoad() throws {
        let policy = try PolicyLoader.parse(text: """
            rules:
              - {action: "a", audit: none}
              - {action: "b", audit: detailed}
              - {action: "c"}
            """, file: "a.yaml")
        #expect(policy.rules.map(\.audit) == [.none, .detailed, .basic])
    }

    @Test func misspelledLevelSuggestsFix() {
        do {
            _ = try PolicyLoader.parse(text: "rules: [{action: a, audit: detailled}]", file: "a.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.first?.description.contains("did you mean 'detailed'?") == true)
        }
    }
}
