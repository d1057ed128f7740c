import Foundation
import Testing
@testable import MGGovernor
@testable import MGLedger
@testable import MGPolicy

/// 1 USD per million input tokens and 2 USD per million output tokens.
private let price = ModelPrice(inputPerToken: 1_000_000, outputPerToken: 2_000_000, cachedInputPerToken: 500_000, cacheWritePerToken: 1_250_000, maxOutputTokens: 1_000)

private func call(input: Int = 100, output: Int? = 100) -> CallDescriptor {
    CallDescriptor(actions: ["llm:m", "llm:completion"], model: "m", price: price, inputTokensBound: input, inputTokensEstimate: input / 4,
                   requestedOutputTokens: output)
}

private func dollars(_ text: String) -> USD { USD(decimalText: text)! }

/// Creates a fresh directory for one test's ledger file and returns the file's path.
private func temporaryLedgerPath() -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mg-ledger-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory.appendingPathComponent("ledger.sqlite").path
}

private func ledger(_ path: String, run: String, agent: String = "agent", task: String? = nil) throws -> Ledger {
    try Ledger(path: path, runID: run, agentID: agent, taskID: task ?? "task-\(run)")
}

private func dailyCeiling(_ text: String) -> [Policy] {
    var ceiling = CostCeiling()
    ceiling.maxUSDPerDay = dollars(text)
    return [Policy(file: "test.yaml", rules: [Rule(action: "llm:*", costCeiling: ceiling)])]
}

/// Reads one column of every call row, in admission order.
private func column(_ path: String, _ sql: String) throws -> [String] {
    let connection = try SQLiteConnection(path: path)
    var values: [String] = []
    try connection.prepare(sql).run([]) { values.append($0.text(0)) }
    return values
}

private func usage(input: Int, output: Int) -> Usage { Usage(uncachedInputTokens: input, outputTokens: output) }

@Suite struct LedgerRecordTests {
    @Test func reservationIsWrittenBeforeSettlement() throws {
        let path = temporaryLedgerPath()
        let subject = try ledger(path, run: "a")
        let governor = Governor(layers: dailyCeiling("1"), ledger: subject)
        let admission = try #require(governor.admit(call()).admission)
        #expect(try column(path, "SELECT state FROM calls") == ["reserved"])
        #expect(try column(path, "SELECT reserved_picodollars FROM calls") == ["\(admission.reservedCost.picodollars)"])
        governor.settle(admission.id, usage: usage(input: 100, output: 50))
        // The journal has the settlement at once; SQLite has it after the writer's next batch.
        #expect(SettlementJournal.records(at: SettlementJournal.path(ledger: path, runID: "a")).count == 1)
        subject.writePending()
        #expect(try column(path, "SELECT state FROM calls") == ["settled"])
        #expect(try column(path, "SELECT cost_picodollars FROM calls") == ["200000000"])
    }

    @Test func releasedCallIsMarkedReleased() throws {
        let path = temporaryLedgerPath()
        let subject = try ledger(path, run: "a")
        let governor = Governor(layers: dailyCeiling("1"), ledger: subject)
        let admission = try #require(governor.admit(call()).admission)
        governor.release(admission.id)
        subject.writePending()
        #expect(try column(path, "SELECT state FROM calls") == ["released"])
    }

    @Test func refusedCallIsNotWritten() throws {
        let path = temporaryLedgerPath()
        let governor = Governor(layers: [Policy(file: "t.yaml", rules: [Rule(action: "search:*")])], ledger: try ledger(path, run: "a"))
        #expect(governor.admit(call()).refusal != nil)
        #expect(try column(path, "SELECT count(*) FROM calls") == ["0"])
    }

    @Test func finishChargesCallsStillReserved() throws {
        let path = temporaryLedgerPath()
        let subject = try ledger(path, run: "a")
        let governor = Governor(layers: dailyCeiling("1"), ledger: subject)
        let admission = try #require(governor.admit(call()).admission)
        subject.finish(reason: "completed", chargeReserved: true)
        #expect(try column(path, "SELECT state || ' ' || cost_picodollars FROM calls") == ["settled \(admission.reservedCost.picodollars)"])
        #expect(try column(path, "SELECT end_reason FROM runs") == ["completed"])
    }

    @Test func newerSchemaIsRefused() throws {
        let path = temporaryLedgerPath()
        _ = try ledger(path, run: "a")
        try SQLiteConnection(path: path).execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        #expect {
            _ = try ledger(path, run: "b")
        } throws: { error in
            (error as? LedgerError)?.description.contains("schema version 99") == true
        }
    }

    @Test func unwritableDirectoryNamesTheFix() {
        #expect {
            _ = try ledger("/proc/mg-run-test/ledger.sqlite", run: "a")
        } throws: { error in
            (error as? LedgerError)?.description.contains("--ledger") == true
        }
    }

    @Test func defaultPathFollowsXDGStateHome() {
        #expect(Ledger.defaultPath(environment: ["XDG_STATE_HOME": "/s", "HOME": "/h"]) == "/s/mg-run/ledger.sqlite")
        #expect(Ledger.defaultPath(environment: ["HOME": "/h"]) == "/h/.local/state/mg-run/ledger.sqlite")
        #expect(Ledger.defaultPath(environment: ["XDG_STATE_HOME": "relative", "HOME": "/h"]) == "/h/.local/state/mg-run/ledger.sqlite")
    }
}

@Suite struct LedgerSharingTests {
    /// Admits and settles calls of `output` tokens until the governor denies one and returns the settled total.
    /// It ends the run as mg-run does, so the settlements are in SQLite.
    private func spend(_ governor: Governor, ledger: Ledger, output: Int = 100) -> USD {
        var total = USD.zero
        while let admission = governor.admit(call(output: output)).admission {
            total += governor.settle(admission.id, usage: usage(input: 100, output: admission.outputTokens ?? 0))
        }
        ledger.finish(reason: "completed", chargeReserved: true)
        return total
    }

    /// Returns a governor over a new run's ledger, and the ledger.
    private func run(_ path: String, _ layers: [Policy], run: String, agent: String = "agent", task: String? = nil) throws -> (Governor, Ledger) {
        let subject = try ledger(path, run: run, agent: agent, task: task)
        return (Governor(layers: layers, ledger: subject), subject)
    }

    @Test func laterRunSeesEarlierRunsDailySpend() throws {
        let path = temporaryLedgerPath()
        let (first, firstLedger) = try run(path, dailyCeiling("0.01"), run: "a")
        let spentFirst = spend(first, ledger: firstLedger)
        let second = Governor(layers: dailyCeiling("0.01"), ledger: try ledger(path, run: "b"))
        #expect(second.admit(call()).refusal != nil)
        #expect(spentFirst <= dollars("0.01"))
    }

    @Test func otherAgentDoesNotShare() throws {
        let path = temporaryLedgerPath()
        let (first, firstLedger) = try run(path, dailyCeiling("0.01"), run: "a", agent: "one")
        _ = spend(first, ledger: firstLedger)
        let other = Governor(layers: dailyCeiling("0.01"), ledger: try ledger(path, run: "b", agent: "two"))
        #expect(other.admit(call()).admission != nil)
    }

    @Test func inFlightReservationOfOtherRunCounts() throws {
        let path = temporaryLedgerPath()
        // 0.0003 USD fits one call of 100 input and 100 output tokens (0.0003 USD) and nothing more.
        let (first, firstLedger) = try run(path, dailyCeiling("0.0003"), run: "a")
        let second = Governor(layers: dailyCeiling("0.0003"), ledger: try ledger(path, run: "b"))
        let admission = try #require(first.admit(call()).admission)
        let refusal = second.admit(call()).refusal
        #expect(refusal?.kind == .window(retryAfterSeconds: 1))
        first.release(admission.id)
        firstLedger.writePending()
        #expect(second.admit(call()).admission != nil)
    }

    @Test func hourlyCountSpansRuns() throws {
        let path = temporaryLedgerPath()
        let layers = [Policy(file: "t.yaml", rules: [Rule(action: "llm:*", rateLimit: RateLimit(maxPerHour: 3))])]
        let first = Governor(layers: layers, ledger: try ledger(path, run: "a"))
        for _ in 0..<2 { _ = first.admit(call()).admission.map { first.settle($0.id, usage: usage(input: 1, output: 1)) } }
        let second = Governor(layers: layers, ledger: try ledger(path, run: "b"))
        #expect(second.admit(call()).admission != nil)
        let refusal = second.admit(call()).refusal
        #expect(refusal?.limit == "rules[0].rate_limit.max_per_hour")
        if case .window(let wait) = refusal?.kind {
            #expect(wait > 3_500)
            #expect(wait <= 3_600)
        } else {
            Issue.record("expected a window refusal, got \(String(describing: refusal))")
        }
    }

    @Test func sameTaskSharesTaskCeiling() throws {
        let path = temporaryLedgerPath()
        var ceiling = CostCeiling()
        ceiling.maxUSDPerTask = dollars("0.001")
        let layers = [Policy(file: "t.yaml", rules: [Rule(action: "llm:*", costCeiling: ceiling)])]
        let (first, firstLedger) = try run(path, layers, run: "a", task: "shared")
        _ = spend(first, ledger: firstLedger)
        let sameTask = Governor(layers: layers, ledger: try ledger(path, run: "b", task: "shared"))
        #expect(sameTask.admit(call()).refusal?.kind == .quota)
        let otherTask = Governor(layers: layers, ledger: try ledger(path, run: "c", task: "other"))
        #expect(otherTask.admit(call()).admission != nil)
    }

    @Test func budgetCountsOtherRunsSpendToday() throws {
        let path = temporaryLedgerPath()
        var policy = Policy(file: "t.yaml", rules: [Rule(action: "llm:*")])
        policy.budget = Budget(dailyLimit: dollars("0.001"))
        let (first, firstLedger) = try run(path, [policy], run: "a")
        _ = spend(first, ledger: firstLedger)
        let second = Governor(layers: [policy], ledger: try ledger(path, run: "b"))
        #expect(second.admit(call()).refusal?.limit == "budget.daily_limit_usd")
    }
}

@Suite struct LedgerRecoveryTests {
    @Test func deadRunsReservationIsReleasedNotSpent() throws {
        let path = temporaryLedgerPath()
        let first = Governor(layers: dailyCeiling("0.0006"), ledger: try ledger(path, run: "a"))
        let settled = try #require(first.admit(call()).admission)
        first.settle(settled.id, usage: usage(input: 100, output: 100))
        _ = try #require(first.admit(call()).admission)
        // The run's process is gone: another process start time than the one recorded, in this PID namespace.
        let gone = "\(ProcessIdentity.bootID):\(ProcessIdentity.pidNamespace):0"
        try SQLiteConnection(path: path).execute("UPDATE runs SET process_start = '\(gone)' WHERE run_id = 'a'")
        let second = Governor(layers: dailyCeiling("0.0006"), ledger: try ledger(path, run: "b"))
        #expect(try column(path, "SELECT state FROM calls WHERE run_id = 'a' ORDER BY call_id") == ["settled", "released"])
        #expect(try column(path, "SELECT end_reason FROM runs WHERE run_id = 'a'") == ["process gone"])
        // 0.0003 settled by the dead run leaves room for exactly one more call.
        #expect(second.admit(call()).admission != nil)
        #expect(second.admit(call()).refusal != nil)
    }

    @Test func deadRunsJournalIsReplayed() throws {
        let path = temporaryLedgerPath()
        let first = Governor(layers: dailyCeiling("1"), ledger: try ledger(path, run: "a"))
        let admission = try #require(first.admit(call()).admission)
        // The run settled the call in its journal and died before SQLite had it.
        let journal = try SettlementJournal(path: SettlementJournal.path(ledger: path, runID: "a"))
        #expect(journal.settled(id: admission.id, uncached: 100, cacheRead: 0, cacheWrite: 0, output: 7, cost: 114_000_000, estimated: false, time: 1))
        let gone = "\(ProcessIdentity.bootID):\(ProcessIdentity.pidNamespace):0"
        try SQLiteConnection(path: path).execute("UPDATE runs SET process_start = '\(gone)' WHERE run_id = 'a'")
        _ = try ledger(path, run: "b")
        #expect(try column(path, "SELECT state || ' ' || cost_picodollars || ' ' || output_tokens FROM calls") == ["settled 114000000 7"])
        #expect(!FileManager.default.fileExists(atPath: journal.path))
    }

    @Test func runInOtherNamespaceIsLeftAlone() throws {
        let path = temporaryLedgerPath()
        let first = Governor(layers: dailyCeiling("1"), ledger: try ledger(path, run: "a"))
        _ = try #require(first.admit(call()).admission)
        try SQLiteConnection(path: path).execute("UPDATE runs SET process_start = '\(ProcessIdentity.bootID):pid:[1]:0' WHERE run_id = 'a'")
        _ = try ledger(path, run: "b")
        #expect(try column(path, "SELECT state FROM calls WHERE run_id = 'a'") == ["reserved"])
    }

    @Test func settlementReplacesRelease() throws {
        let path = temporaryLedgerPath()
        let subject = try ledger(path, run: "a")
        let governor = Governor(layers: dailyCeiling("1"), ledger: subject)
        let admission = try #require(governor.admit(call()).admission)
        try SQLiteConnection(path: path).execute("UPDATE calls SET state = 'released'")
        governor.settle(admission.id, usage: usage(input: 100, output: 100))
        subject.writePending()
        #expect(try column(path, "SELECT state FROM calls") == ["settled"])
    }

    @Test func liveRunIsLeftAlone() throws {
        let path = temporaryLedgerPath()
        let first = Governor(layers: dailyCeiling("1"), ledger: try ledger(path, run: "a"))
        _ = try #require(first.admit(call()).admission)
        _ = try ledger(path, run: "b")
        #expect(try column(path, "SELECT state FROM calls WHERE run_id = 'a'") == ["reserved"])
    }
}

@Suite struct LedgerConcurrencyTests {
    /// Two runs with 25 threads each share one ledger file. Whatever the sizes and
    /// interleaving, the admitted calls fit the hourly count and the settled spend
    /// fits the daily ceiling.
    @Test(arguments: 1...8)
    func twoRunsNeverOvershoot(seed: UInt64) throws {
        let path = temporaryLedgerPath()
        var ceiling = CostCeiling()
        ceiling.maxUSDPerDay = dollars("0.02")
        let layers = [Policy(file: "t.yaml", rules: [Rule(action: "llm:*", rateLimit: RateLimit(maxPerHour: 30), costCeiling: ceiling)])]
        let ledgers = [try ledger(path, run: "a"), try ledger(path, run: "b")]
        let governors = ledgers.map { Governor(layers: layers, ledger: $0) }
        DispatchQueue.concurrentPerform(iterations: 50) { index in
            var random = SplitMix(seed: seed &* 1_000 &+ UInt64(index))
            let governor = governors[index % 2]
            for _ in 0..<3 {
                let input = Int(random.next() % 2_000) + 1
                guard let admission = governor.admit(call(input: input, output: Int(random.next() % 1_000) + 16)).admission else { continue }
                if random.next() % 5 == 0 {
                    governor.release(admission.id)
                } else {
                    // Providers report at most what was reserved.
                    let output = Int(random.next() % UInt64((admission.outputTokens ?? 0) + 1))
                    governor.settle(admission.id, usage: usage(input: input, output: output))
                }
            }
        }
        for subject in ledgers { subject.finish(reason: "completed", chargeReserved: false) }
        let settled = try column(path, "SELECT coalesce(sum(cost_picodollars), 0) FROM calls WHERE state = 'settled'")
        let admitted = try column(path, "SELECT count(*) FROM calls WHERE state != 'released'")
        #expect(Int64(settled[0])! <= dollars("0.02").picodollars)
        #expect(Int(admitted[0])! <= 30)
    }
}

/// A small seeded generator, so a failing seed can be replayed.
struct SplitMix {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}

@Suite struct LedgerModeTests {
    @Test func aloneRunDecidesWithoutTransaction() throws {
        let path = temporaryLedgerPath()
        let subject = try ledger(path, run: "a")
        let governor = Governor(layers: dailyCeiling("1"), ledger: subject)
        _ = try #require(governor.admit(call()).admission)
        _ = try #require(governor.admit(call()).admission)
        // The first admission read the other runs in a transaction; the second was journaled for the writer.
        subject.writePending()
        #expect(try column(path, "SELECT count(*) FROM calls") == ["2"])
        #expect(try column(path, "SELECT mode FROM runs") == ["solo"])
    }

    @Test func joiningRunWaitsForSoloRunToWrite() throws {
        let path = temporaryLedgerPath()
        let first = try ledger(path, run: "a")
        let firstGovernor = Governor(layers: dailyCeiling("0.0006"), ledger: first)
        for _ in 0..<2 { _ = try #require(firstGovernor.admit(call()).admission) }
        let started = Date()
        let second = Governor(layers: dailyCeiling("0.0006"), ledger: try ledger(path, run: "b"))
        let waited = Date().timeIntervalSince(started)
        // Both of the first run's reservations (0.0003 USD each) are in SQLite before the second decides.
        #expect(second.admit(call()).refusal != nil)
        #expect(try column(path, "SELECT mode FROM runs ORDER BY run_id") == ["shared", "shared"])
        #expect(waited < 1)
    }
}
