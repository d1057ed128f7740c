import Foundation
import Testing
@testable import MGGovernor
@testable import MGPolicy

/// One limit of each kind, each checked with 50 concurrent calls of random sizes.
enum LimitKindCase: String, CaseIterable, CustomTestStringConvertible {
    case perSecond, perMinute, perHour, perDay, perTask, fixedMinute, concurrent
    case tokensMinute, tokensHour, tokensDay, fixedTokensHour
    case usdMinute, usdHour, usdDay, usdTask, budget, globalCalls, globalUSD

    var testDescription: String { rawValue }

    static let callLimit = 17
    static let tokenLimit: Int64 = 40_000
    static let dollarLimit = USD(decimalText: "0.02")!

    var layer: Policy {
        var limits = RateLimit()
        var ceiling = CostCeiling()
        var policy = Policy(file: "p.yaml")
        switch self {
        case .perSecond: limits.maxPerSecond = Self.callLimit
        case .perMinute: limits.maxPerMinute = Self.callLimit
        case .perHour: limits.maxPerHour = Self.callLimit
        case .perDay: limits.maxPerDay = Self.callLimit
        case .perTask: limits.maxPerTask = Self.callLimit
        case .fixedMinute:
            limits.maxPerMinute = Self.callLimit
            limits.fixedWindows = true
        case .concurrent: limits.maxConcurrent = 3
        case .tokensMinute: limits.maxTokensPerMinute = Int(Self.tokenLimit)
        case .tokensHour: limits.maxTokensPerHour = Int(Self.tokenLimit)
        case .tokensDay: limits.maxTokensPerDay = Int(Self.tokenLimit)
        case .fixedTokensHour:
            limits.maxTokensPerHour = Int(Self.tokenLimit)
            limits.fixedWindows = true
        case .usdMinute: ceiling.maxUSDPerMinute = Self.dollarLimit
        case .usdHour: ceiling.maxUSDPerHour = Self.dollarLimit
        case .usdDay: ceiling.maxUSDPerDay = Self.dollarLimit
        case .usdTask: ceiling.maxUSDPerTask = Self.dollarLimit
        case .budget: policy.budget = Budget(dailyLimit: Self.dollarLimit)
        case .globalCalls:
            var global = Rule(action: "*", path: "global_rate_limit")
            global.rateLimit.maxPerMinute = Self.callLimit
            policy.globalRule = global
        case .globalUSD:
            var global = Rule(action: "*", path: "global_rate_limit")
            global.costCeiling.maxUSDPerHour = Self.dollarLimit
            policy.globalRule = global
        }
        policy.rules = [Rule(action: "llm:*", rateLimit: limits, costCeiling: ceiling)]
        return policy
    }
}

@Suite struct LimitPropertyTests {
    private static let price = ModelPrice(inputPerToken: 1_000_000, outputPerToken: 2_000_000, maxOutputTokens: 1_000)

    /// Peak calls in flight, updated as calls are admitted and finish.
    private final class Peak: @unchecked Sendable {
        // Only touched under `lock`.
        private let lock = NSLock()
        private var current = 0
        private(set) var highest = 0

        func enter() {
            lock.lock()
            current += 1
            highest = max(highest, current)
            lock.unlock()
        }

        func leave() {
            lock.lock()
            current -= 1
            lock.unlock()
        }
    }

    @Test(arguments: LimitKindCase.allCases, 0..<6)
    func fiftyConcurrentCallsStayWithinLimit(kind: LimitKindCase, seed: Int) async {
        let subject = Governor(layers: [kind.layer], time: ManualTimeSource(start: 1_800_000_030))
        let peak = Peak()
        let admitted = await withTaskGroup(of: Int.self) { group in
            for worker in 0..<50 {
                group.addTask {
                    var random = SplitMix(seed: UInt64(seed * 1_000 + worker) &+ 77)
                    let input = Int(random.next() % 3_000) + 1
                    let call = CallDescriptor(actions: ["llm:m", "llm:completion"], model: "m", price: Self.price, inputTokensBound: input,
                                              inputTokensEstimate: input / 4, requestedOutputTokens: Int(random.next() % 1_000) + 16)
                    guard let admission = subject.admit(call).admission else { return 0 }
                    peak.enter()
                    // Yield so other tasks are decided while this one is in flight.
                    await Task.yield()
                    let output = Int(random.next() % UInt64((admission.outputTokens ?? 0) + 1))
                    peak.leave()
                    if random.next() % 5 == 0 {
                        subject.release(admission.id)
                        return 0
                    }
                    subject.settle(admission.id, usage: Usage(uncachedInputTokens: input, outputTokens: output))
                    return 1
                }
            }
            return await group.reduce(0, +)
        }
        let totals = subject.totals
        switch kind {
        case .perSecond, .perMinute, .perHour, .perDay, .perTask, .fixedMinute, .globalCalls:
            #expect(admitted <= LimitKindCase.callLimit)
        case .concurrent:
            #expect(peak.highest <= 3)
        case .tokensMinute, .tokensHour, .tokensDay, .fixedTokensHour:
            #expect(Int64(totals.inputTokens + totals.outputTokens) <= LimitKindCase.tokenLimit)
        case .usdMinute, .usdHour, .usdDay, .usdTask, .budget, .globalUSD:
            #expect(totals.cost <= LimitKindCase.dollarLimit)
        }
        #expect(admitted > 0)
        #expect(totals.inFlight == 0)
        #expect(totals.reserved == .zero)
    }
}
