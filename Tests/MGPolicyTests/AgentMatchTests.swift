import Testing
@testable import MGPolicy

private func match(_ yaml: String) throws -> AgentMatch? {
    try PolicyLoader.parse(text: "agent_match:\n" + yaml + "\nrules: [{action: \"llm:*\"}]\n", file: "layer.yaml").agentMatch
}

private func errors(_ yaml: String) -> [String] {
    do {
        _ = try PolicyLoader.parse(text: "agent_match:\n" + yaml + "\n", file: "layer.yaml")
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

@Suite struct AgentMatchLoadingTests {
    @Test func loadsEveryKey() throws {
        let loaded = try #require(try match("""
              tags: [research, nightly]
              environment: [production, staging]
              tokens: ["team-a-*"]
              trust_tier: {min: verified}
            """))
        #expect(loaded.tags == ["research", "nightly"])
        #expect(loaded.environments == ["production", "staging"])
        #expect(loaded.tokens == ["team-a-*"])
        #expect(loaded.minimumTrustTier == .verified)
    }

    @Test func environmentMayBeOneName() throws {
        #expect(try match("  environment: production")?.environments == ["production"])
    }

    @Test func absentMatchIsNil() throws {
        #expect(try PolicyLoader.parse(text: "rules: [{action: \"llm:*\"}]", file: "a.yaml").agentMatch == nil)
    }

    @Test func misspelledTierSuggestsFix() {
        #expect(errors("  trust_tier: {min: verifed}") == [
            "layer.yaml:2:21: agent_match.trust_tier.min: invalid value 'verifed'; expected one of untrusted, basic, verified, privileged (did you mean 'verified'?)",
        ])
    }

    @Test func tierWithoutMinIsError() {
        #expect(errors("  trust_tier: {}").first?.contains("missing key 'min'") == true)
    }

    @Test func tagsMustBeStrings() {
        #expect(errors("  tags: [research, [nested]]") == ["layer.yaml:2:20: agent_match.tags[1]: expected a string, got a list"])
    }

    @Test func unknownKeySuggestsFix() {
        #expect(errors("  tag: [research]").first?.contains("did you mean 'tags'?") == true)
    }
}

@Suite struct AgentMatchTests {
    private func subject(tags: [String] = [], environments: [String]? = nil, tokens: [String]? = nil, tier: TrustTier? = nil) -> AgentMatch {
        var match = AgentMatch()
        match.tags = tags
        match.environments = environments
        match.tokens = tokens
        match.minimumTrustTier = tier
        return match
    }

    @Test func emptyMatchesEveryRun() {
        #expect(subject().mismatch(RunIdentity()) == nil)
    }

    @Test func everyTagMustBePresent() {
        let match = subject(tags: ["a", "b"])
        #expect(match.mismatch(RunIdentity(tags: ["a", "b", "c"])) == nil)
        #expect(match.mismatch(RunIdentity(tags: ["a"])) == "it needs a tag matching 'b' (--tag)")
    }

    @Test func tagsAndEnvironmentsMayBeGlobs() {
        let match = subject(tags: ["eu-*"], environments: ["prod*"])
        #expect(match.mismatch(RunIdentity(tags: ["eu-west"], environment: "production")) == nil)
        #expect(match.mismatch(RunIdentity(tags: ["us-east"], environment: "production")) != nil)
        #expect(match.mismatch(RunIdentity(tags: ["eu-west"], environment: "staging")) != nil)
    }

    @Test func environmentMustBeListed() {
        let match = subject(environments: ["production", "staging"])
        #expect(match.mismatch(RunIdentity(environment: "staging")) == nil)
        #expect(match.mismatch(RunIdentity(environment: "dev")) != nil)
        #expect(match.mismatch(RunIdentity()) != nil)
    }

    @Test func tokensAreGlobsOverAgentID() {
        let match = subject(tokens: ["team-a-*", "solo"])
        #expect(match.mismatch(RunIdentity(agentID: "team-a-crawler")) == nil)
        #expect(match.mismatch(RunIdentity(agentID: "solo")) == nil)
        #expect(match.mismatch(RunIdentity(agentID: "team-b-crawler")) != nil)
    }

    @Test func trustTierIsMinimum() {
        let match = subject(tier: .verified)
        #expect(match.mismatch(RunIdentity(trustTier: .privileged)) == nil)
        #expect(match.mismatch(RunIdentity(trustTier: .verified)) == nil)
        #expect(match.mismatch(RunIdentity(trustTier: .basic)) == "it needs trust tier verified or higher (--trust-tier)")
    }

    @Test func tiersAreOrdered() {
        #expect(TrustTier.allCases == [.untrusted, .basic, .verified, .privileged])
        #expect(TrustTier.untrusted < .basic)
        #expect(TrustTier.basic < .verified)
        #expect(TrustTier.verified < .privileged)
    }
}

@Suite struct MetadataLoadingTests {
    @Test func changelogEntriesAreChecked() {
        do {
            _ = try PolicyLoader.parse(text: "changelog:\n  - {version: 2, date: 2026-12-01, changes: [a]}\n  - {version: 1, changes: [[x]]}\n", file: "m.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.map(\.description) == ["m.yaml:3:28: changelog[1].changes[0]: expected a string, got a list"])
        }
    }

    @Test func metadataIsKept() throws {
        let policy = try PolicyLoader.parse(text: "name: n\nversion: 1.2.3\nowner: team\nchangelog: [{version: 1, date: x, changes: [y]}]\n", file: "m.yaml")
        #expect(policy.metadata["version"] == "1.2.3")
        #expect(policy.metadata["owner"] == "team")
        #expect(policy.metadata["changelog"] == "1 entries")
    }
}

@Suite struct ScalingLoadingTests {
    @Test func tiersLoad() throws {
        let policy = try PolicyLoader.parse(text: """
            scaling:
              team: {agents: 10, daily_budget: 500.00, per_agent_limit: 50, dedicated_support: false}
              org: {agents: 100, dedicated_support: true}
            """, file: "s.yaml")
        #expect(policy.scaling.map(\.name) == ["team", "org"])
        #expect(policy.scaling[0].agents == 10)
        #expect(policy.scaling[0].dailyBudget == USD(decimalText: "500"))
        #expect(policy.scaling[1].dedicatedSupport == true)
    }

    @Test func badTierIsError() {
        do {
            _ = try PolicyLoader.parse(text: "scaling:\n  team: {agents: -1, seats: 3}\n", file: "s.yaml")
            Issue.record("expected errors")
        } catch {
            #expect(error.errors.count == 2)
        }
    }
}
