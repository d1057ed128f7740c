import Foundation
import Testing
@testable import MGGovernor
@testable import MGPolicy

private let price = ModelPrice(inputPerToken: 1_000_000, outputPerToken: 2_000_000, maxOutputTokens: 1_000)

private func call(model: String = "m", input: Int = 100, output: Int? = 100, context: [String: String] = [:], fingerprint: UInt64 = 0) -> CallDescriptor {
    var descriptor = CallDescriptor(actions: ["llm:\(model)", "llm:completion"], model: model, price: price,
                                    inputTokensBound: input, inputTokensEstimate: input / 4, requestedOutputTokens: output)
    descriptor.context = context
    descriptor.fingerprint = fingerprint
    return descriptor
}

/// Loads a policy from YAML, so conditions are parsed exactly as a user's file is.
private func governor(_ yaml: String, time: ManualTimeSource = ManualTimeSource(), identity: RunIdentity = RunIdentity()) throws -> Governor {
    Governor(layers: [try PolicyLoader.parse(text: yaml, file: "c.yaml")], time: time, identity: identity, taskID: "t-1")
}

@Suite struct ConditionRuleTests {
    @Test func ruleAppliesOnlyWhenConditionHolds() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["request.model == 'cheap'"]
            """)
        #expect(subject.admit(call(model: "cheap")).admission != nil)
        #expect(subject.admit(call(model: "dear")).refusal?.limit == "rules[0].conditions")
    }

    @Test func denyRuleWithConditionDeniesOnlyThen() throws {
        let subject = try governor("""
            allowed_regions: [eu, us]
            rules:
              - action: "llm:*"
              - action: "llm:*"
                effect: deny
                conditions: ["context.region not in allowed_regions"]
            """)
        #expect(subject.admit(call(context: ["region": "eu"])).admission != nil)
        #expect(subject.admit(call(context: ["region": "apac"])).refusal?.limit == "rules[1]")
        // A missing value is not in any list, so the deny rule applies.
        #expect(subject.admit(call()).refusal?.limit == "rules[1]")
    }

    @Test func everyConditionMustHold() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["request.max_tokens <= 500", "request.input_tokens < 1000"]
            """)
        #expect(subject.admit(call(input: 400, output: 100)).admission != nil)
        #expect(subject.admit(call(input: 400, output: 900)).refusal != nil)
        #expect(subject.admit(call(input: 8_000, output: 100)).refusal != nil)
    }

    @Test func contextNumbersCompareAsNumbers() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["context.priority >= 2"]
            """)
        #expect(subject.admit(call(context: ["priority": "3"])).admission != nil)
        #expect(subject.admit(call(context: ["priority": "1"])).refusal != nil)
    }

    @Test func timeOfDayFromClock() throws {
        // 1_800_000_000 is 2027-01-15 08:00:00 UTC, a Friday.
        let time = ManualTimeSource(start: 1_800_000_000)
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["time.hour >= 9 AND time.hour < 17", "time.weekday in ['mon', 'tue', 'wed', 'thu', 'fri']"]
            """, time: time)
        #expect(subject.admit(call()).refusal != nil)
        time.advance(by: 3_600)
        #expect(subject.admit(call()).admission != nil)
    }

    @Test func agentIdentityVariables() throws {
        let yaml = """
            rules:
              - action: "llm:*"
                conditions: ["'research' in agent.tags AND agent.trust_tier >= 'verified' AND agent.id == 'crawler'"]
            """
        let trusted = RunIdentity(agentID: "crawler", tags: ["research"], trustTier: .verified)
        #expect(try governor(yaml, identity: trusted).admit(call()).admission != nil)
        let basic = RunIdentity(agentID: "crawler", tags: ["research"], trustTier: .basic)
        #expect(try governor(yaml, identity: basic).admit(call()).refusal != nil)
    }

    @Test func estimatedCostBoundsTheCall() throws {
        // 100 input tokens at 1 USD/M plus 100 output tokens at 2 USD/M: 0.0003 USD.
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["estimated_cost_usd <= 0.0003"]
            """)
        #expect(subject.admit(call(output: 100)).admission != nil)
        #expect(subject.admit(call(output: 101)).refusal != nil)
    }

    @Test func taskCallsCountAdmissions() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["task.calls < 2"]
            """)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).refusal != nil)
    }
}

@Suite struct ConditionMetricTests {
    @Test func callsInWindowExpire() throws {
        let time = ManualTimeSource()
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["calls in last 1 minute < 2"]
            """, time: time)
        for _ in 0..<2 { _ = subject.admit(call()).admission.map { subject.settle($0.id, usage: Usage(uncachedInputTokens: 1, outputTokens: 1)) } }
        #expect(subject.admit(call()).refusal != nil)
        time.advance(by: 61)
        #expect(subject.admit(call()).admission != nil)
    }

    @Test func costLastHourUsesSettledCost() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["cost_last_hour < 0.001"]
            """)
        let first = try #require(subject.admit(call()).admission)
        subject.settle(first.id, usage: Usage(uncachedInputTokens: 1_000, outputTokens: 0))
        #expect(subject.admit(call()).refusal != nil)
    }

    @Test func sameActionRepeatedBreaksLoop() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["same_action_repeated <= 3"]
            """)
        #expect(subject.needsFingerprints)
        for _ in 0..<3 { #expect(subject.admit(call(fingerprint: 7)).admission != nil) }
        #expect(subject.admit(call(fingerprint: 7)).refusal != nil)
        // A different payload ends the run of identical operations.
        #expect(subject.admit(call(fingerprint: 8)).admission != nil)
    }

    @Test func errorsCountFailedCalls() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["errors_last_5min < 2"]
            """)
        for _ in 0..<2 { subject.admit(call()).admission.map { subject.release($0.id) } }
        #expect(subject.admit(call()).refusal != nil)
    }

    @Test func tokenTrendOverCalls() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["NOT (tokens_per_call_trend over 2 calls > 2x)"]
            """)
        for tokens in [100, 150, 300] {
            let admission = try #require(subject.admit(call()).admission)
            subject.settle(admission.id, usage: Usage(uncachedInputTokens: tokens, outputTokens: 0))
        }
        // 300 tokens against 100 two calls earlier is a 3x trend.
        #expect(subject.admit(call()).refusal != nil)
    }

    @Test func historyIsOffWithoutMetrics() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
                conditions: ["request.model == 'm'"]
            """)
        #expect(!subject.needsFingerprints)
        #expect(subject.admit(call()).admission != nil)
    }
}

@Suite struct ConditionLoadingTests {
    private func errors(_ yaml: String) -> [String] {
        do {
            _ = try PolicyLoader.parse(text: yaml, file: "c.yaml")
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    @Test func unknownIdentifierNamesPath() {
        let found = errors("""
            rules:
              - action: "llm:*"
                conditions: ["cost_todya < 5"]
            """)
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("c.yaml:3:19: rules[0].conditions[0]: ") == true)
        #expect(found.first?.contains("cost_today") == true)
    }

    @Test func undefinedNamedListIsError() {
        let found = errors("""
            rules:
              - action: "llm:*"
                conditions: ["request.domain in allowed_domain"]
            """)
        #expect(found.first?.contains("allowed_domain") == true)
    }

    @Test func singleStringIsOneCondition() throws {
        let policy = try PolicyLoader.parse(text: """
            rules:
              - action: "llm:*"
                conditions: "time.hour < 20"
            """, file: "c.yaml")
        #expect(policy.rules[0].conditions.map(\.text) == ["time.hour < 20"])
    }

    @Test func namedListsAreLoaded() throws {
        let policy = try PolicyLoader.parse(text: "allowed_domains: [a.com, b.com]\nrules: [{action: \"llm:*\"}]", file: "c.yaml")
        #expect(policy.namedLists["allowed_domains"] == .list([.string("a.com"), .string("b.com")]))
    }

    @Test func everyBadConditionIsReported() {
        let found = errors("""
            rules:
              - action: "llm:*"
                conditions: ["(calls_last_minute > 3", "bogus == 1", "time.hour >"]
            """)
        #expect(found.count == 3)
    }
}

@Suite struct BehavioralLimitTests {
    private func research(_ action: String = "search:web", topic: String? = nil) -> CallDescriptor {
        var descriptor = CallDescriptor(actions: [action], model: "", price: ModelPrice(inputPerToken: 0, outputPerToken: 0),
                                        inputTokensBound: 0, inputTokensEstimate: 0, producesOutput: false)
        descriptor.topic = topic
        return descriptor
    }

    @Test func researchStreakNeedsLLMOutput() throws {
        let subject = try governor("""
            rules:
              - action: "*"
                behavioral_limits: {max_consecutive_research: 2}
            """)
        #expect(subject.admit(research()).admission != nil)
        #expect(subject.admit(research("read:document")).admission != nil)
        let refusal = subject.admit(research("api:external:example.com")).refusal
        #expect(refusal?.kind == .forbidden)
        #expect(refusal?.limit == "rules[0].behavioral_limits.max_consecutive_research")
        // An LLM call that writes output ends the streak; other actions do not count.
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(research()).admission != nil)
    }

    @Test func topicIterationsAreCounted() throws {
        let subject = try governor("""
            rules:
              - action: "search:*"
                behavioral_limits: {max_iterations_per_topic: 2}
            """)
        #expect(subject.admit(research(topic: "rust async")).admission != nil)
        #expect(subject.admit(research(topic: "rust async")).admission != nil)
        #expect(subject.admit(research(topic: "rust async")).refusal?.limit == "rules[0].behavioral_limits.max_iterations_per_topic")
        #expect(subject.admit(research(topic: "go generics")).admission != nil)
        // A call without a topic is not counted.
        #expect(subject.admit(research()).admission != nil)
    }

    @Test func releasedCallGivesTopicBack() throws {
        let subject = try governor("""
            rules:
              - action: "search:*"
                behavioral_limits: {max_iterations_per_topic: 1}
            """)
        let admission = try #require(subject.admit(research(topic: "t")).admission)
        subject.release(admission.id)
        #expect(subject.admit(research(topic: "t")).admission != nil)
    }

    @Test func queriesNormalizeToOneTopic() {
        #expect(CallDescriptor.normalizedTopic("Rust async, tutorial!") == CallDescriptor.normalizedTopic("tutorial rust ASYNC"))
        #expect(CallDescriptor.normalizedTopic("  ,, ") == nil)
    }
}

@Suite struct DelegationLimitTests {
    private func spawn(depth: Int) -> CallDescriptor {
        var descriptor = CallDescriptor(actions: ["delegate:spawn"], model: "", price: ModelPrice(inputPerToken: 0, outputPerToken: 0),
                                        inputTokensBound: 0, inputTokensEstimate: 0, producesOutput: false)
        descriptor.depth = depth
        return descriptor
    }

    @Test func depthAboveLimitIsForbidden() throws {
        let subject = try governor("rules: [{action: \"delegate:*\", rate_limit: {max_depth: 2}}]")
        #expect(subject.admit(spawn(depth: 2)).admission != nil)
        let refusal = subject.admit(spawn(depth: 3)).refusal
        #expect(refusal?.kind == .forbidden)
        #expect(refusal?.limit == "rules[0].rate_limit.max_depth")
    }

    @Test func liveSubAgentsCountAsConcurrent() throws {
        let subject = try governor("rules: [{action: \"delegate:*\", rate_limit: {max_concurrent: 1}}]")
        let first = try #require(subject.admit(spawn(depth: 1)).admission)
        #expect(subject.admit(spawn(depth: 1)).refusal?.limit == "rules[0].rate_limit.max_concurrent")
        subject.settle(first.id, cost: .zero, tokens: 0)
        #expect(subject.admit(spawn(depth: 1)).admission != nil)
    }
}

@Suite struct TimeRestrictionGovernorTests {
    @Test func callsOutsideHoursAreRefusedUntilOpening() throws {
        // 08:00 UTC on a Friday; the window opens at 09:00.
        let time = ManualTimeSource(start: 1_800_000_000)
        let subject = try governor("""
            time_restrictions:
              allowed_hours: {start: 9, end: 17}
              on_violation: deny_with_message
              violation_message: "Working hours are 9 to 17 UTC."
            rules:
              - action: "llm:*"
            """, time: time)
        let refusal = subject.admit(call()).refusal
        #expect(refusal?.kind == .window(retryAfterSeconds: 3_600))
        #expect(refusal?.message == "Working hours are 9 to 17 UTC.")
        time.advance(by: 3_600)
        #expect(subject.admit(call()).admission != nil)
    }
}

@Suite struct TriggerTests {
    @Test func breakerTripsOnceWithValues() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
            circuit_breaker:
              triggers:
                - {name: loop, condition: "same_action_repeated > 2", action: pause, cooldown_minutes: 5}
            """)
        for _ in 0..<2 { _ = subject.admit(call(fingerprint: 9)) }
        #expect(subject.checkTriggers().isEmpty)
        _ = subject.admit(call(fingerprint: 9))
        let trips = subject.checkTriggers()
        #expect(trips.map(\.trigger.name) == ["circuit_breaker.triggers[0] (loop)"])
        #expect(trips.first?.values == "same_action_repeated=3")
        #expect(trips.first?.trigger.cooldownSeconds == 300)
        // In its cooldown it does not trip again.
        _ = subject.admit(call(fingerprint: 9))
        #expect(subject.checkTriggers().isEmpty)
    }

    @Test func breakLoopDeniesOnlyTheRepeatingRequest() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
            anomaly_detection:
              enabled: true
              patterns:
                - {name: repeat, condition: "same_action_repeated >= 3", action: break_loop}
            """)
        for _ in 0..<3 { _ = subject.admit(call(fingerprint: 4)) }
        #expect(subject.checkTriggers().count == 1)
        let refusal = subject.admit(call(fingerprint: 4)).refusal
        #expect(refusal?.limit == "anomaly_detection.patterns[0] (repeat)")
        #expect(subject.admit(call(fingerprint: 5)).admission != nil)
        #expect(subject.admit(call(fingerprint: 4)).admission != nil)
    }

    @Test func emergencyStopReadsCallsWindow() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
            emergency_stop:
              trigger: ["calls_last_minute > 3"]
              action: kill
            """)
        for _ in 0..<3 { _ = subject.admit(call()).admission.map { subject.settle($0.id, usage: Usage(uncachedInputTokens: 1, outputTokens: 1)) } }
        #expect(subject.checkTriggers().isEmpty)
        _ = subject.admit(call())
        #expect(subject.checkTriggers().first?.values == "calls_last_minute=4")
    }

    @Test func reduceRateLimitHalvesCountLimitsForTheCooldown() throws {
        let time = ManualTimeSource()
        let subject = try governor("""
            rules:
              - action: "llm:*"
                rate_limit: {max_per_minute: 4}
            circuit_breaker:
              triggers:
                - {name: burst, condition: "calls_last_minute >= 1", action: reduce_rate_limit, cooldown_minutes: 2}
            """, time: time)
        _ = subject.admit(call())
        let trip = try #require(subject.checkTriggers().first)
        #expect(trip.effect == "count limits halved for 120s")
        // Four a minute become two: one call is in the window, so one more fits.
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).refusal?.limit == "rules[0].rate_limit.max_per_minute")
        // After the cooldown the full limit is back: two calls in the window, two more fit.
        time.advance(by: 121)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).admission != nil)
    }

    @Test func reduceRateLimitsWithoutCooldownLastsTheRun() throws {
        let time = ManualTimeSource()
        let subject = try governor("""
            rules:
              - action: "llm:*"
                rate_limit: {max_per_hour: 10}
            anomaly_detection:
              patterns:
                - {name: any, condition: "calls_last_minute >= 1", action: reduce_rate_limits}
            """, time: time)
        _ = subject.admit(call())
        #expect(subject.checkTriggers().first?.effect == "count limits halved for the rest of the run")
        for _ in 0..<4 { #expect(subject.admit(call()).admission != nil) }
        #expect(subject.admit(call()).refusal?.limit == "rules[0].rate_limit.max_per_hour")
    }

    @Test func capTokensUsesTheMedianOfRecentCalls() throws {
        let time = ManualTimeSource()
        let subject = try governor("""
            rules:
              - action: "llm:*"
            circuit_breaker:
              triggers:
                - {name: growth, condition: "calls_last_minute >= 3", action: cap_tokens, cooldown_minutes: 1}
            """, time: time)
        for (input, output) in [(100, 100), (300, 300), (50, 50)] {
            let admission = try #require(subject.admit(call(input: input, output: 1_000)).admission)
            subject.settle(admission.id, usage: Usage(uncachedInputTokens: input, outputTokens: output))
        }
        let trip = try #require(subject.checkTriggers().first)
        #expect(trip.effect == "per-call token cap 200, the median of the last 3 calls, for 60s")
        // 400 input tokens estimate as 100, leaving 100 of the 200 for output.
        let capped = try #require(subject.admit(call(input: 400, output: 1_000)).admission)
        #expect(capped.outputTokens == 100)
        #expect(capped.rewritesOutputCap)
        let refusal = subject.admit(call(input: 1_000, output: 1_000)).refusal
        #expect(refusal?.limit == "circuit_breaker.triggers[0] (growth).cap_tokens")
        #expect(refusal?.kind == .window(retryAfterSeconds: 60))
        time.advance(by: 61)
        #expect(subject.admit(call(input: 1_000, output: 1_000)).admission?.outputTokens == 1_000)
    }

    @Test func capTokensBeforeAnyCallSetsNoCap() throws {
        let subject = try governor("""
            rules:
              - action: "llm:*"
            emergency_stop:
              trigger: ["calls_last_minute >= 1"]
              action: cap_tokens
              notify: ops-pager
            """)
        _ = subject.admit(call())
        let trip = try #require(subject.checkTriggers().first)
        #expect(trip.effect == "no settled call to take a median from yet, so no cap")
        #expect(trip.trigger.steps == [.notify("ops-pager")])
    }

    @Test(arguments: [[1], [3, 1, 2], [4, 1, 3, 2], [10, 10, 1000]])
    func medianOfTokenCounts(values: [Int]) {
        let expected = [[1]: 1, [3, 1, 2]: 2, [4, 1, 3, 2]: 2, [10, 10, 1000]: 10][values]
        #expect(Governor.median(values) == expected)
        #expect(Governor.median([]) == nil)
    }

    @Test func onTripStepsAndRunDefaultAreRead() throws {
        let policy = try PolicyLoader.parse(text: """
            run: {on_trip: kill}
            circuit_breaker:
              triggers:
                - {name: a, condition: "errors_last_minute > 3"}
                - {name: b, condition: "errors_last_minute > 9", action: alert}
              on_trip: [{log: error}, {notify: ops-slack}, {save_state: true}]
            """, file: "t.yaml")
        #expect(policy.triggers.map(\.action) == [.kill, .alert])
        #expect(policy.triggers[0].steps == [.log("error"), .notify("ops-slack"), .saveState])
    }

    @Test func triggerWithoutActionOrDefaultIsNamed() {
        do {
            _ = try PolicyLoader.parse(text: "circuit_breaker:\n  triggers: [{name: x, condition: \"errors_last_minute > 3\"}]\n  on_trip: [{log: loud}, {log: info, notify: x}]\n", file: "t.yaml")
            Issue.record("expected errors")
        } catch {
            let found = error.errors.map(\.description)
            #expect(found.count == 3)
            #expect(found.contains { $0.contains("missing key 'action'") && $0.contains("or set run.on_trip for every trigger") })
            #expect(found.contains { $0.contains("circuit_breaker.on_trip[0].log: invalid value 'loud'") })
            #expect(found.contains { $0.contains("circuit_breaker.on_trip[1]: give one step per item") })
        }
    }
}
