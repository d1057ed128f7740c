import Foundation
import Testing
@testable import MGGovernor
@testable import MGPolicy

/// 1 USD per million input tokens and 2 USD per million output tokens: 1e6 and 2e6 picodollars per token.
private let price = ModelPrice(inputPerToken: 1_000_000, outputPerToken: 2_000_000, cachedInputPerToken: 500_000, cacheWritePerToken: 1_250_000, maxOutputTokens: 1_000)

private func call(input: Int = 100, output: Int? = nil, model: String = "m", choices: Int = 1) -> CallDescriptor {
    CallDescriptor(actions: ["llm:\(model)", "llm:completion"], model: model, price: price,
                   inputTokensBound: input, inputTokensEstimate: input / 4, requestedOutputTokens: output, choices: choices)
}

private func governor(_ rules: [Rule], defaultEffect: Effect = .deny, time: any TimeSource = ManualTimeSource()) -> Governor {
    Governor(layers: [Policy(file: "test.yaml", defaultEffect: defaultEffect, rules: rules)], time: time)
}

private func dollars(_ text: String) -> USD { USD(decimalText: text)! }

@Suite struct GovernorRuleTests {
    @Test func defaultDenyWithoutMatchingRule() {
        let refusal = governor([Rule(action: "search:*")]).admit(call()).refusal
        #expect(refusal?.kind == .forbidden)
        #expect(refusal?.limit == "default_effect")
    }

    @Test func denyRuleWins() {
        let refusal = governor([Rule(action: "llm:*"), Rule(action: "llm:m", effect: .deny, path: "rules[1]")]).admit(call()).refusal
        #expect(refusal?.kind == .forbidden)
        #expect(refusal?.limit == "rules[1]")
    }

    @Test func layerWithoutRulesAbstains() {
        let layers = [Policy(file: "a.yaml", rules: [Rule(action: "llm:*")]), Policy(file: "b.yaml")]
        #expect(Governor(layers: layers, time: ManualTimeSource()).admit(call()).admission != nil)
    }

    @Test func everyLayerMustAllow() {
        let layers = [Policy(file: "a.yaml", rules: [Rule(action: "llm:*")]), Policy(file: "b.yaml", rules: [Rule(action: "search:*")])]
        let refusal = Governor(layers: layers, time: ManualTimeSource()).admit(call()).refusal
        #expect(refusal?.kind == .forbidden)
    }
}

@Suite struct GovernorWindowTests {
    @Test func minuteWindowAdmitsExactlyLimit() {
        let time = ManualTimeSource()
        let subject = governor([Rule(action: "llm:*", rateLimit: RateLimit(maxPerMinute: 3))], time: time)
        for _ in 0..<3 {
            #expect(subject.admit(call()).admission != nil)
            time.advance(by: 10)
        }
        let refusal = subject.admit(call()).refusal
        #expect(refusal?.kind == .window(retryAfterSeconds: 30))
        #expect(refusal?.limit == "rules[0].rate_limit.max_per_minute")
        time.advance(by: 30.5)
        #expect(subject.admit(call()).admission != nil)
    }

    @Test func releasedCallFreesItsSlot() {
        let subject = governor([Rule(action: "llm:*", rateLimit: RateLimit(maxPerMinute: 1, maxPerTask: 1))])
        let first = subject.admit(call()).admission!
        #expect(subject.admit(call()).refusal != nil)
        subject.release(first.id)
        #expect(subject.admit(call()).admission != nil)
    }

    @Test func taskCountIsPermanentOnceSettled() {
        let subject = governor([Rule(action: "llm:*", rateLimit: RateLimit(maxPerTask: 1))])
        let first = subject.admit(call()).admission!
        #expect(subject.admit(call()).refusal?.kind == .window(retryAfterSeconds: 1))
        subject.settle(first.id, usage: Usage(uncachedInputTokens: 10, outputTokens: 10))
        #expect(subject.admit(call()).refusal?.kind == .quota)
    }

    @Test func secondWindow() {
        let time = ManualTimeSource()
        let subject = governor([Rule(action: "llm:*", rateLimit: RateLimit(maxPerSecond: 2))], time: time)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).refusal?.limit == "rules[0].rate_limit.max_per_second")
        time.advance(by: 1.01)
        #expect(subject.admit(call()).admission != nil)
    }

    @Test func concurrencyFreesOnSettleAndRelease() {
        var limits = RateLimit()
        limits.maxConcurrent = 2
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)])
        let first = subject.admit(call()).admission!
        let second = subject.admit(call()).admission!
        let refusal = subject.admit(call()).refusal
        #expect(refusal?.kind == .window(retryAfterSeconds: 1))
        #expect(refusal?.limit == "rules[0].rate_limit.max_concurrent")
        subject.settle(first.id, usage: Usage(uncachedInputTokens: 1, outputTokens: 1))
        #expect(subject.admit(call()).admission != nil)
        subject.release(second.id)
        #expect(subject.admit(call()).admission != nil)
    }

    @Test func inputAndOutputTokenCaps() {
        var limits = RateLimit()
        limits.maxInputTokensPerCall = 50
        limits.maxOutputTokensPerCall = 300
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)])
        // call() estimates input at a quarter of its bound.
        #expect(subject.admit(call(input: 400)).refusal?.limit == "rules[0].rate_limit.max_input_tokens_per_call")
        #expect(subject.admit(call(input: 100)).admission?.outputTokens == 300)
        #expect(subject.admit(call(input: 100, choices: 3)).admission?.outputTokens == 100)
        #expect(subject.admit(call(input: 100, choices: 30)).refusal?.kind == .forbidden)
    }

    @Test func consecutiveSameActionDeniedUntilAnother() {
        var limits = RateLimit()
        limits.maxConsecutive = 2
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)])
        #expect(subject.admit(call(model: "a")).admission != nil)
        #expect(subject.admit(call(model: "a")).admission != nil)
        let refusal = subject.admit(call(model: "a")).refusal
        #expect(refusal?.limit == "rules[0].rate_limit.max_consecutive")
        #expect(refusal?.kind == .forbidden)
        #expect(subject.admit(call(model: "b")).admission != nil)
        #expect(subject.admit(call(model: "a")).admission != nil)
    }

    @Test func conclusionRequiredAfterCalls() {
        var rule = Rule(action: "llm:*")
        rule.requireConclusionAfter = 2
        let subject = governor([rule])
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).admission != nil)
        let refusal = subject.admit(call()).refusal
        #expect(refusal?.kind == .conclude)
        #expect(refusal?.limit == "rules[0].behavioral_limits.require_conclusion_after")
        #expect(refusal?.stopReason == "behavioral_limits:require_conclusion_after")
        // Embeddings write no output, so they are not asked to conclude.
        let embedding = CallDescriptor(actions: ["llm:e", "llm:embedding"], model: "e", price: price, inputTokensBound: 10,
                                       inputTokensEstimate: 3, producesOutput: false)
        #expect(subject.admit(embedding).admission != nil)
    }

    @Test func cooldownAfterAnyLimit() {
        let time = ManualTimeSource()
        var limits = RateLimit(maxPerMinute: 1)
        limits.cooldownSeconds = 120
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)], time: time)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).refusal?.limit == "rules[0].rate_limit.max_per_minute")
        // The minute window reopens after 60 s, but the cooldown started by the refusal lasts 120 s.
        time.advance(by: 61)
        let refusal = subject.admit(call()).refusal
        #expect(refusal?.limit == "rules[0].rate_limit.cooldown_seconds")
        #expect(refusal?.kind == .window(retryAfterSeconds: 59))
        time.advance(by: 59.5)
        #expect(subject.admit(call()).admission != nil)
    }

    private func attempt(_ fingerprint: UInt64, retry: Int = 0) -> CallDescriptor {
        var descriptor = call()
        descriptor.fingerprint = fingerprint
        descriptor.retryCount = retry
        return descriptor
    }

    @Test func retriesOfFailedRequestLimited() {
        var limits = RateLimit()
        limits.maxRetries = 2
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)])
        for _ in 0..<3 {
            let admission = subject.admit(attempt(7, retry: 1)).admission
            #expect(admission != nil)
            subject.release(admission!.id)
        }
        let refusal = subject.admit(attempt(7, retry: 3)).refusal
        #expect(refusal?.limit == "rules[0].rate_limit.max_retries")
        #expect(refusal?.kind == .forbidden)
        // A different request is not a retry.
        #expect(subject.admit(attempt(8)).admission != nil)
    }

    @Test func retryWaitsForDelay() {
        let time = ManualTimeSource()
        var limits = RateLimit()
        limits.retryDelaySeconds = 5
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)], time: time)
        subject.release(subject.admit(attempt(7)).admission!.id)
        time.advance(by: 1)
        #expect(subject.admit(attempt(7, retry: 1)).refusal?.kind == .window(retryAfterSeconds: 4))
        time.advance(by: 4.1)
        #expect(subject.admit(attempt(7, retry: 1)).admission != nil)
    }

    @Test func consecutiveFailuresStopAction() {
        var limits = RateLimit()
        limits.maxConsecutiveFailures = 2
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)])
        subject.release(subject.admit(attempt(1)).admission!.id)
        subject.settle(subject.admit(attempt(2)).admission!.id, usage: Usage(uncachedInputTokens: 1, outputTokens: 1))
        // The success reset the count, so two more failures are needed.
        subject.release(subject.admit(attempt(3)).admission!.id)
        subject.release(subject.admit(attempt(4)).admission!.id)
        let refusal = subject.admit(attempt(5)).refusal
        #expect(refusal?.kind == .quota)
        #expect(refusal?.limit == "rules[0].rate_limit.max_consecutive_failures")
    }

    @Test func hourAndDayWindows() {
        let time = ManualTimeSource()
        let subject = governor([Rule(action: "llm:*", rateLimit: RateLimit(maxPerHour: 2, maxPerDay: 3))], time: time)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).refusal?.limit == "rules[0].rate_limit.max_per_hour")
        time.advance(by: 3_601)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).refusal?.limit == "rules[0].rate_limit.max_per_day")
    }
}

@Suite struct GovernorCeilingTests {
    @Test func outputCapInjectedWhenClientSentNone() {
        // 100 input tokens cost 100e6; 0.0011 USD = 1.1e9 leaves 1e9 / 2e6 = 500 output tokens.
        let subject = governor([Rule(action: "llm:*", costCeiling: CostCeiling(maxUSDPerCall: dollars("0.0011")))])
        let admission = subject.admit(call()).admission!
        #expect(admission.outputTokens == 500)
        #expect(admission.rewritesOutputCap)
        #expect(admission.reservedCost == dollars("0.0011"))
    }

    @Test func clientCapKeptWhenItFits() {
        let admission = governor([Rule(action: "llm:*")]).admit(call(output: 50)).admission!
        #expect(admission.outputTokens == 50)
        #expect(!admission.rewritesOutputCap)
    }

    @Test func modelLimitCapsOutput() {
        let admission = governor([Rule(action: "llm:*")]).admit(call(output: 5_000)).admission!
        #expect(admission.outputTokens == 1_000)
        #expect(admission.rewritesOutputCap)
    }

    @Test func choicesMultiplyOutputCost() {
        let subject = governor([Rule(action: "llm:*", costCeiling: CostCeiling(maxUSDPerCall: dollars("0.0011")))])
        #expect(subject.admit(call(choices: 2)).admission?.outputTokens == 250)
    }

    @Test func perCallCeilingForbidsLargeInput() {
        let subject = governor([Rule(action: "llm:*", costCeiling: CostCeiling(maxUSDPerCall: dollars("0.0001")))])
        let refusal = subject.admit(call(input: 100)).refusal
        #expect(refusal?.kind == .forbidden)
        #expect(refusal?.limit == "rules[0].cost_ceiling.max_usd_per_call")
    }

    @Test func tokensPerCallCapsOutput() {
        let subject = governor([Rule(action: "llm:*", rateLimit: RateLimit(maxTokensPerCall: 225))])
        #expect(subject.admit(call(input: 100)).admission?.outputTokens == 200)
        #expect(subject.admit(call(input: 1_000)).refusal?.kind == .forbidden)
    }

    @Test func rateLimitCeilingNamedInRefusal() {
        var ceiling = CostCeiling()
        ceiling.merge(perCall: nil, perTask: dollars("0.0001"))
        let refusal = governor([Rule(action: "llm:*", costCeiling: ceiling)]).admit(call(input: 1_000)).refusal
        #expect(refusal?.limit == "rules[0].rate_limit.max_usd_per_task")
        #expect(refusal?.stopReason == "cost_ceiling:max_usd_per_task")
    }

    @Test func taskCeilingStopsWhenSpent() {
        let subject = governor([Rule(action: "llm:*", costCeiling: CostCeiling(maxUSDPerTask: dollars("0.001")))])
        let first = subject.admit(call(input: 100, output: 100)).admission!
        subject.settle(first.id, usage: Usage(uncachedInputTokens: 400, outputTokens: 290))
        #expect(subject.totals.cost == dollars("0.00098"))
        let refusal = subject.admit(call(input: 100, output: 100)).refusal
        #expect(refusal?.kind == .quota)
        #expect(refusal?.stopReason == "cost_ceiling:max_usd_per_task")
    }

    @Test func reservedButUnsettledIsTemporary() {
        let subject = governor([Rule(action: "llm:*", costCeiling: CostCeiling(maxUSDPerTask: dollars("0.0005")))])
        let first = subject.admit(call(input: 100, output: 150)).admission!
        let refusal = subject.admit(call(input: 100, output: 100)).refusal
        #expect(refusal?.kind == .window(retryAfterSeconds: 1))
        #expect(refusal?.stopReason == nil)
        subject.settle(first.id, usage: Usage(uncachedInputTokens: 10, outputTokens: 10))
        #expect(subject.admit(call(input: 100, output: 100)).admission != nil)
    }

    @Test func perCallFeeReservedAndCharged() {
        var fee = price
        fee.perCall = 500_000_000  // 0.0005 USD
        let subject = governor([Rule(action: "llm:*", costCeiling: CostCeiling(maxUSDPerCall: dollars("0.0004")))])
        let descriptor = CallDescriptor(actions: ["llm:m"], model: "m", price: fee, inputTokensBound: 1, inputTokensEstimate: 1)
        #expect(subject.admit(descriptor).refusal?.kind == .forbidden)
        #expect(Pricing.cost(of: Usage(uncachedInputTokens: 0, outputTokens: 0), at: fee) == dollars("0.0005"))
    }

    @Test func freeUnknownModelKeepsClientCap() {
        let free = ModelPrice(inputPerToken: 0, outputPerToken: 0, maxOutputTokens: 0)
        let subject = governor([Rule(action: "llm:*")])
        let uncapped = subject.admit(CallDescriptor(actions: ["llm:x"], model: "x", price: free, inputTokensBound: 10, inputTokensEstimate: 3)).admission
        #expect(uncapped?.rewritesOutputCap == false)
        #expect(uncapped?.reservedCost == .zero)
        let capped = subject.admit(CallDescriptor(actions: ["llm:x"], model: "x", price: free, inputTokensBound: 10, inputTokensEstimate: 3,
                                                  requestedOutputTokens: 100)).admission
        #expect(capped?.outputTokens == 100)
        #expect(capped?.rewritesOutputCap == false)
    }

    @Test func cachedTokensPricedSeparately() {
        let usage = Usage(uncachedInputTokens: 100, cacheReadTokens: 1_000, cacheWriteTokens: 10, outputTokens: 20)
        // 100 * 1e6 + 1000 * 0.5e6 + 10 * 1.25e6 + 20 * 2e6 picodollars
        #expect(Pricing.cost(of: usage, at: price).picodollars == 100_000_000 + 500_000_000 + 12_500_000 + 40_000_000)
    }
}

@Suite struct GovernorAmountWindowTests {
    @Test func tokensPerMinuteCapsAndReopens() {
        let time = ManualTimeSource()
        var limits = RateLimit()
        limits.maxTokensPerMinute = 1_000
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)], time: time)
        // 100 input tokens reserved at their bound leave 900 for output.
        let first = subject.admit(call(input: 100)).admission!
        #expect(first.outputTokens == 900)
        subject.settle(first.id, usage: Usage(uncachedInputTokens: 100, outputTokens: 600))
        // 700 settled: 300 left, so the next call gets 200 output tokens.
        time.advance(by: 10)
        let second = subject.admit(call(input: 100)).admission
        #expect(second?.outputTokens == 200)
        // While the second call is in flight, its reservation may still shrink: retry in a second.
        #expect(subject.admit(call(input: 100)).refusal?.kind == .window(retryAfterSeconds: 1))
        subject.settle(second!.id, usage: Usage(uncachedInputTokens: 100, outputTokens: 200))
        let refusal = subject.admit(call(input: 100)).refusal
        #expect(refusal?.limit == "rules[0].rate_limit.max_tokens_per_minute")
        #expect(refusal?.kind == .window(retryAfterSeconds: 50))
        time.advance(by: 50.5)
        #expect(subject.admit(call(input: 100)).admission != nil)
    }

    @Test func tokensWindowForbidsCallThatNeverFits() {
        var limits = RateLimit()
        limits.maxTokensPerHour = 50
        let refusal = governor([Rule(action: "llm:*", rateLimit: limits)]).admit(call(input: 100)).refusal
        #expect(refusal?.kind == .forbidden)
        #expect(refusal?.limit == "rules[0].rate_limit.max_tokens_per_hour")
    }

    @Test func dollarsPerHourSettledNeverPastLimit() {
        let time = ManualTimeSource()
        var ceiling = CostCeiling()
        ceiling.maxUSDPerHour = dollars("0.002")
        let subject = governor([Rule(action: "llm:*", costCeiling: ceiling)], time: time)
        var settled = USD.zero
        for _ in 0..<20 {
            guard let admission = subject.admit(call(input: 100, output: 400)).admission else { break }
            settled += subject.settle(admission.id, usage: Usage(uncachedInputTokens: 100, outputTokens: admission.outputTokens!))
        }
        #expect(settled <= dollars("0.002"))
        let refusal = subject.admit(call(input: 100, output: 400)).refusal
        #expect(refusal?.limit == "rules[0].cost_ceiling.max_usd_per_hour")
        time.advance(by: 3_601)
        #expect(subject.admit(call(input: 100, output: 400)).admission != nil)
    }

    @Test func releaseReturnsWindowAmount() {
        var limits = RateLimit()
        limits.maxTokensPerMinute = 600
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)])
        let first = subject.admit(call(input: 100, output: 500)).admission!
        #expect(subject.admit(call(input: 100, output: 500)).refusal != nil)
        subject.release(first.id)
        #expect(subject.admit(call(input: 100, output: 500)).admission != nil)
    }

    @Test func globalLimitAppliesToEveryRuleButAllowsNothing() {
        var global = Rule(action: "*", rateLimit: RateLimit(maxPerMinute: 2), path: "global_rate_limit")
        global.costCeiling = CostCeiling()
        var policy = Policy(file: "g.yaml", rules: [Rule(action: "llm:a"), Rule(action: "llm:b", path: "rules[1]")])
        policy.globalRule = global
        let subject = Governor(layers: [policy], time: ManualTimeSource())
        #expect(subject.admit(call(model: "a")).admission != nil)
        #expect(subject.admit(call(model: "b")).admission != nil)
        #expect(subject.admit(call(model: "a")).refusal?.limit == "global_rate_limit.max_per_minute")
        #expect(subject.admit(call(model: "c")).refusal?.kind == .forbidden)
    }
}

@Suite struct GovernorBudgetTests {
    private func subject(_ budget: Budget, rules: [Rule] = [Rule(action: "llm:*")], time: ManualTimeSource = ManualTimeSource()) -> Governor {
        var policy = Policy(file: "b.yaml", rules: rules)
        policy.budget = budget
        return Governor(layers: [policy], time: time)
    }

    private func spend(_ governor: Governor, _ descriptor: CallDescriptor, input: Int, output: Int) -> Bool {
        guard let admission = governor.admit(descriptor).admission else { return false }
        governor.settle(admission.id, usage: Usage(uncachedInputTokens: input, outputTokens: output))
        return true
    }

    @Test func dailyLimitHoldsAndResetsAtMidnight() {
        // 1800000000 is 2027-01-15 08:00 UTC.
        let time = ManualTimeSource(start: 1_800_000_000)
        let governor = subject(Budget(dailyLimit: dollars("0.001")), time: time)
        #expect(spend(governor, call(input: 100, output: 500), input: 100, output: 425))  // 0.00095
        let refusal = governor.admit(call(input: 100, output: 300)).refusal
        #expect(refusal?.kind == .quota)
        #expect(refusal?.limit == "budget.daily_limit_usd")
        time.advance(by: 16 * 3_600 + 1)
        #expect(governor.admit(call(input: 100, output: 300)).admission != nil)
    }

    @Test func thresholdsFireOnceWithTheirActions() {
        var budget = Budget(dailyLimit: dollars("0.001"), warningPercent: 50, criticalPercent: 90)
        budget.onWarning = [.notifyOps]
        budget.onCritical = [.kill]
        let governor = subject(budget)
        #expect(spend(governor, call(input: 100, output: 100), input: 100, output: 100))  // 0.0003
        #expect(governor.takeBudgetEvents().isEmpty)
        #expect(spend(governor, call(input: 100, output: 100), input: 100, output: 100))  // 0.0006
        #expect(governor.takeBudgetEvents().map(\.level) == ["warning"])
        #expect(spend(governor, call(input: 100, output: 100), input: 100, output: 100))  // 0.0009
        let events = governor.takeBudgetEvents()
        #expect(events.map(\.level) == ["critical"])
        #expect(events.first?.actions == [.kill])
    }

    @Test func warningPausesNonEssentialAndReducesLimits() {
        var budget = Budget(dailyLimit: dollars("0.001"), warningPercent: 10)
        budget.onWarning = [.pauseNonEssential, .reduceRateLimitsBy(percent: 50)]
        var essential = Rule(action: "llm:a", rateLimit: RateLimit(maxPerMinute: 4))
        essential.essential = true
        let governor = subject(budget, rules: [essential, Rule(action: "llm:b", path: "rules[1]")])
        #expect(spend(governor, call(input: 100, output: 100, model: "a"), input: 100, output: 100))
        // The warning is in force: b is not essential, and a's four calls a minute became two.
        let paused = governor.admit(call(model: "b")).refusal
        #expect(paused?.kind == .forbidden)
        #expect(paused?.limit == "budget.on_warning")
        #expect(governor.admit(call(input: 10, output: 20, model: "a")).admission != nil)
        #expect(governor.admit(call(input: 10, output: 20, model: "a")).refusal?.limit == "rules[0].rate_limit.max_per_minute")
    }
}

@Suite struct GovernorConcurrencyTests {
    /// Many tasks admit calls of random sizes and settle them at random
    /// fractions of their reservation. No seed may settle past the ceiling or
    /// admit more than the window allows.
    @Test(arguments: 0..<20)
    func concurrentCallsNeverOvershoot(seed: Int) async {
        let ceiling = dollars("0.01")
        let windowLimit = 25
        let subject = governor([Rule(action: "llm:*", rateLimit: RateLimit(maxPerMinute: windowLimit),
                                     costCeiling: CostCeiling(maxUSDPerTask: ceiling))])
        let admitted = await withTaskGroup(of: Int.self) { group in
            for worker in 0..<50 {
                group.addTask {
                    var random = SplitMix(seed: UInt64(seed * 1_000 + worker))
                    let input = Int(random.next() % 3_000) + 1
                    guard case .admit(let admission) = subject.admit(call(input: input, output: Int(random.next() % 2_000) + 1)) else { return 0 }
                    let outputUsed = Int(random.next() % UInt64((admission.outputTokens ?? 0) + 1))
                    if random.next() % 5 == 0 {
                        subject.release(admission.id)
                        return 0
                    }
                    subject.settle(admission.id, usage: Usage(uncachedInputTokens: input, outputTokens: outputUsed))
                    return 1
                }
            }
            return await group.reduce(0, +)
        }
        #expect(subject.totals.cost <= ceiling)
        #expect(admitted <= windowLimit)
        #expect(subject.totals.inFlight == 0)
        #expect(subject.totals.reserved == .zero)
    }
}

/// A small deterministic generator, so each seed replays the same sizes.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct WindowLogTests {
    @Test func countsAndPrunesInOrder() {
        var log = WindowLog()
        for second in 0..<5_000 { log.append(time: Double(second), id: UInt64(second)) }
        #expect(log.count(after: 4_989.5) == 10)
        log.prune(through: 4_000)
        #expect(log.count == 999)
        #expect(log.count(after: 0) == 999)
        #expect(log.reopeningEntryTime(after: 4_989.5, limit: 3) == 4_997)
    }

    @Test func removeFindsReleasedEntry() {
        var log = WindowLog()
        for id in 1...10 { log.append(time: Double(id), id: UInt64(id)) }
        log.prune(through: 3)
        log.remove(id: 9)
        log.remove(id: 2)  // already pruned: nothing happens
        #expect(log.count == 6)
        #expect(log.count(after: 8.5) == 1)
    }
}

@Suite struct RefusalKindTests {
    @Test(arguments: [
        ("rules[0].cost_ceiling.max_usd_per_task", LimitKind.cost), ("rules[1].rate_limit.max_usd_per_hour", .cost),
        ("global_rate_limit.max_usd_per_day", .cost), ("budget.daily_limit_usd", .cost), ("budget.on_warning", .cost),
        ("rules[0].rate_limit.max_per_minute", .rate), ("global_rate_limit.max_concurrent", .rate), ("rate_limit.max_tokens_per_hour", .rate),
    ])
    func limitKindFollowsKeyPath(limit: String, kind: LimitKind) {
        #expect(Refusal(kind: .quota, limit: limit, message: "").limitKind == kind)
    }

    @Test(arguments: ["default_effect", "rules[2]", "ledger", "rules[0].behavioral_limits.require_conclusion_after"])
    func policyRefusalHasNoLimitKind(limit: String) {
        #expect(Refusal(kind: .forbidden, limit: limit, message: "").limitKind == nil)
    }
}

@Suite struct GovernorRequiresTests {
    private func subject() -> Governor {
        var rule = Rule(action: "delegate:*")
        rule.requires = [("delegation_approved", "true")]
        return Governor(layers: [Policy(file: "t.yaml", rules: [rule])], time: ManualTimeSource())
    }

    private func delegation(_ context: [String: String]) -> CallDescriptor {
        var call = CallDescriptor(actions: ["delegate:spawn"], model: "", price: ModelPrice(inputPerToken: 0, outputPerToken: 0),
                                  inputTokensBound: 0, inputTokensEstimate: 0, producesOutput: false)
        call.context = context
        return call
    }

    @Test func missingContextIsForbidden() {
        let refusal = subject().admit(delegation([:])).refusal
        #expect(refusal?.kind == .forbidden)
        #expect(refusal?.limit == "rules[0].requires.delegation_approved")
    }

    @Test func wrongValueIsForbidden() {
        #expect(subject().admit(delegation(["delegation_approved": "false"])).refusal?.kind == .forbidden)
    }

    @Test func matchingContextIsAdmitted() {
        #expect(subject().admit(delegation(["delegation_approved": "true"])).admission != nil)
    }
}

@Suite struct GovernorCacheWriteTests {
    @Test func cacheWriteRaisesInputBound() {
        // Input 1 USD/M, 1-hour writes 2 USD/M: 1000 input tokens may cost 0.002 USD.
        var ceiling = CostCeiling()
        ceiling.maxUSDPerCall = dollars("0.0021")
        let subject = governor([Rule(action: "llm:*", costCeiling: ceiling)])
        var writing = call(input: 1_000, output: 16)
        writing.mayWriteCache = true
        #expect(subject.admit(call(input: 1_000, output: 16)).admission?.reservedCost == dollars("0.001032"))
        #expect(subject.admit(writing).admission?.reservedCost == dollars("0.002032"))
    }

    @Test func oneHourWritePricedAtItsRate() {
        var usage = Usage(uncachedInputTokens: 0, outputTokens: 0)
        usage.cacheWrite1hTokens = 1_000_000
        #expect(Pricing.cost(of: usage, at: price) == dollars("2"))
    }
}

@Suite struct GovernorFixedWindowTests {
    private func fixed(_ limits: RateLimit) -> RateLimit {
        var limits = limits
        limits.fixedWindows = true
        return limits
    }

    @Test func minuteWindowResetsAtBoundary() {
        // 1_800_000_000 is a whole minute; start 30 s into it.
        let time = ManualTimeSource(start: 1_800_000_030)
        let subject = governor([Rule(action: "llm:*", rateLimit: fixed(RateLimit(maxPerMinute: 2)))], time: time)
        #expect(subject.admit(call()).admission != nil)
        #expect(subject.admit(call()).admission != nil)
        let refusal = subject.admit(call()).refusal
        #expect(refusal?.kind == .window(retryAfterSeconds: 30))
        time.advance(by: 30)
        #expect(subject.admit(call()).admission != nil)
    }

    @Test func rollingWindowDoesNotResetAtBoundary() {
        let time = ManualTimeSource(start: 1_800_000_030)
        let subject = governor([Rule(action: "llm:*", rateLimit: RateLimit(maxPerMinute: 2))], time: time)
        _ = subject.admit(call())
        _ = subject.admit(call())
        time.advance(by: 30)
        #expect(subject.admit(call()).refusal?.kind == .window(retryAfterSeconds: 30))
    }

    @Test func fixedTokenWindowFreesAllAtBoundary() {
        let time = ManualTimeSource(start: 1_800_000_000 + 3_000)
        var limits = fixed(RateLimit())
        limits.maxTokensPerHour = 500
        let subject = governor([Rule(action: "llm:*", rateLimit: limits)], time: time)
        let admission = subject.admit(call(input: 100, output: 300))
        #expect(admission.admission != nil)
        subject.settle(admission.admission!.id, usage: Usage(uncachedInputTokens: 100, outputTokens: 300))
        // 400 of 500 tokens are used; 100 input plus the 16-token minimum output does not fit.
        let refusal = subject.admit(call(input: 100, output: 300)).refusal
        #expect(refusal?.kind == .window(retryAfterSeconds: 600))
        time.advance(by: 600)
        #expect(subject.admit(call(input: 100, output: 300)).admission != nil)
    }
}
