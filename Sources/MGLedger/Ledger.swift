import Foundation
import MGGovernor
import MGLog
import MGPolicy

/// The durable record of every call, in SQLite, shared by every mg-run process on the machine.
///
/// Each admission runs in an IMMEDIATE transaction, which holds the
/// database's write lock: the governor decides while no other process can
/// admit, reads the calls of the agent's other runs, and its reservation is
/// written before the lock is released. Settlements replace reservations.
/// WAL mode with `synchronous=NORMAL` keeps every committed row through a
/// crash of mg-run, because the kernel keeps the written pages. A power loss
/// can lose the last commits.
///
/// A run that dies leaves reservations behind. The next process that opens
/// the ledger, and every running one every few seconds, finds runs whose
/// process is gone and marks their reservations released: a call that never
/// settled is not spend.
public final class Ledger: SharedLedger, @unchecked Sendable {
    // The connection and statements are only used under `lock`.
    public let path: String
    public let runID: String
    public let agentID: String
    public let taskID: String
    private let logger: Logger
    private let lock = Locked(())
    private let connection: SQLiteConnection
    /// Shares transactions between concurrent admissions and settlements.
    private var commits: GroupCommit!
    /// This run's settlements and releases, durable here until the background writer has them in SQLite.
    private let journal: SettlementJournal
    private let pending = Locked<[SettlementJournal.Record]>([])
    private let pendingSignal = DispatchSemaphore(value: 0)
    /// Solo mode: no other run of this agent is live, so admissions skip the shared transaction and
    /// reservations are journaled and written by the writer like settlements. Admissions in solo mode and
    /// the switch out of it take this lock, so no solo reservation is left unwritten once the switch is done.
    private let solo = Locked(false)
    /// Whether the governor still needs the other runs' calls read once before it decides alone.
    private var needsOthers = true
    /// Seconds between the writer's checks for another run of the agent while in solo mode.
    /// A starting run waits for the solo run to notice it, so this bounds its start-up wait.
    static let soloPollInterval = 0.05
    /// How long a starting run waits for live runs of its agent to leave solo mode.
    static let joinTimeout = 2.0
    /// Journals of dead runs applied in the current transaction, to remove once it commits.
    private var replayedJournals: [String] = []
    private let insertCall: Statement
    private let settleCall: Statement
    private let releaseCall: Statement
    /// Inserts a reservation made in solo mode, from the writer or a dead run's journal.
    private let insertLater: Statement
    private let selectOthers: Statement
    private let selectDataVersion: Statement
    private var lastDataVersion: Int64 = -1
    /// The mean settled cost of this agent's tasks whose runs have ended, read when the ledger opens.
    public private(set) var averageTaskCost: USD?
    private var lastRecovery = 0.0
    /// The data version the writer last checked the mode at; only the writer thread uses it.
    private var modeDataVersion: Int64 = -1

    /// This run's journal file.
    public var journalPath: String { journal.path }

    /// Seconds between checks for runs that died with reservations.
    static let recoveryInterval = 5.0
    static let schemaVersion = 1

    /// Returns the default location: `$XDG_STATE_HOME/mg-run/ledger.sqlite`, else `~/.local/state/mg-run/ledger.sqlite`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let base: String
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            base = state
        } else {
            base = (environment["HOME"] ?? NSHomeDirectory()) + "/.local/state"
        }
        return base + "/mg-run/ledger.sqlite"
    }

    /// Opens or creates the ledger, registers this run and releases the reservations of runs that died.
    public init(path: String, runID: String, agentID: String, taskID: String, logger: Logger = Logger()) throws(LedgerError) {
        self.path = path
        self.runID = runID
        self.agentID = agentID
        self.taskID = taskID
        self.logger = logger
        var isDirectory: ObjCBool = false
        // SQLite reads ":memory:" and "file:" names as a database in memory or a URI, which would not persist.
        if path.isEmpty || path.hasSuffix("/") || path.hasPrefix(":") || path.hasPrefix("file:")
            || (FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue) {
            throw LedgerError(path: path, message: "is not a file path; pass --ledger with a file name, such as --ledger ./ledger.sqlite")
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        if !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw LedgerError(path: path, message: "cannot create its directory: \(error.localizedDescription); pass --ledger PATH in a writable directory")
            }
        }

        let connection = try SQLiteConnection(path: path)
        self.connection = connection
        try connection.execute("PRAGMA journal_mode=WAL")
        try connection.execute("PRAGMA synchronous=NORMAL")
        // Checkpoints copy the WAL into the database file. A thread of its own runs them, off the
        // calls' path, where an automatic checkpoint added milliseconds to the call that triggered it.
        try connection.execute("PRAGMA wal_autocheckpoint=0")

        try connection.transaction { () throws(LedgerError) in
            try connection.execute("""
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS runs (
                    run_id TEXT PRIMARY KEY,
                    agent_id TEXT NOT NULL,
                    task_id TEXT NOT NULL,
                    pid INTEGER NOT NULL,
                    process_start TEXT NOT NULL,
                    started_at REAL NOT NULL,
                    ended_at REAL,
                    end_reason TEXT,
                    mode TEXT NOT NULL DEFAULT 'shared' CHECK (mode IN ('solo', 'shared'))
                );
                CREATE TABLE IF NOT EXISTS calls (
                    run_id TEXT NOT NULL,
                    call_id INTEGER NOT NULL,
                    agent_id TEXT NOT NULL,
                    task_id TEXT NOT NULL,
                    admitted_at REAL NOT NULL,
                    actions TEXT NOT NULL,
                    model TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('reserved', 'settled', 'released')),
                    reserved_tokens INTEGER NOT NULL,
                    reserved_picodollars INTEGER NOT NULL,
                    input_tokens INTEGER,
                    cache_read_tokens INTEGER,
                    cache_write_tokens INTEGER,
                    output_tokens INTEGER,
                    cost_picodollars INTEGER,
                    estimated INTEGER,
                    settled_at REAL,
                    PRIMARY KEY (run_id, call_id)
                ) WITHOUT ROWID;
                CREATE INDEX IF NOT EXISTS calls_by_agent ON calls (agent_id, admitted_at);
                """)
            var version: Int64?
            try connection.prepare("SELECT value FROM meta WHERE key = 'schema_version'").run([]) { version = Int64($0.text(0)) }
            if let version, version != Int64(Ledger.schemaVersion) {
                throw LedgerError(path: path, message: "has schema version \(version), this mg-run writes version \(Ledger.schemaVersion); use a newer mg-run or another --ledger file")
            }
            try connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '\(Ledger.schemaVersion)')")
            // Ledgers written before runs had a mode get the column; every run in them is shared.
            var columns: [String] = []
            try connection.prepare("PRAGMA table_info(runs)").run([]) { columns.append($0.text(1)) }
            if !columns.contains("mode") {
                try connection.execute("ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'shared'")
            }
            try connection.prepare("INSERT INTO runs (run_id, agent_id, task_id, pid, process_start, started_at) VALUES (?, ?, ?, ?, ?, ?)")
                .run([.text(runID), .text(agentID), .text(taskID), .integer(Int64(getpid())), .text(ProcessIdentity.current()),
                      .real(Date().timeIntervalSince1970)])
        }

        insertCall = try connection.prepare("""
            INSERT INTO calls (run_id, call_id, agent_id, task_id, admitted_at, actions, model, state, reserved_tokens, reserved_picodollars)
            VALUES (?, ?, ?, ?, ?, ?, ?, 'reserved', ?, ?)
            """)
        // A settlement wins over a release by another process: a run judged dead that still settles was
        // alive, and the provider billed its call.
        settleCall = try connection.prepare("""
            UPDATE calls SET state = 'settled', input_tokens = ?, cache_read_tokens = ?, cache_write_tokens = ?, output_tokens = ?,
                cost_picodollars = ?, estimated = ?, settled_at = ?
            WHERE run_id = ? AND call_id = ? AND state != 'settled'
            """)
        releaseCall = try connection.prepare("UPDATE calls SET state = 'released', settled_at = ? WHERE run_id = ? AND call_id = ? AND state = 'reserved'")
        insertLater = try connection.prepare("""
            INSERT OR IGNORE INTO calls (run_id, call_id, agent_id, task_id, admitted_at, actions, model, state, reserved_tokens, reserved_picodollars)
            SELECT ?, ?, agent_id, task_id, ?, ?, ?, 'reserved', ?, ? FROM runs WHERE run_id = ?
            """)
        selectOthers = try connection.prepare("""
            SELECT admitted_at, actions, task_id, state, reserved_tokens, reserved_picodollars,
                   coalesce(input_tokens, 0) + coalesce(cache_read_tokens, 0) + coalesce(cache_write_tokens, 0) + coalesce(output_tokens, 0),
                   coalesce(cost_picodollars, 0)
            FROM calls WHERE agent_id = ? AND admitted_at > ? AND state != 'released' AND run_id != ?
            ORDER BY admitted_at
            """)
        selectDataVersion = try connection.prepare("PRAGMA data_version")
        journal = try SettlementJournal(path: SettlementJournal.path(ledger: path, runID: runID))
        commits = GroupCommit { [unowned self] batch in self.commit(batch) }
        startWriter()
        try lock.withLock { _ throws(LedgerError) in
            try connection.transaction { () throws(LedgerError) in try recoverDeadRuns(now: Date().timeIntervalSince1970) }
            removeReplayedJournals()
        }
        try join()
        var average: Int64?
        try connection.prepare("""
            SELECT avg(total) FROM (
                SELECT sum(coalesce(c.cost_picodollars, 0)) AS total FROM calls c
                WHERE c.agent_id = ? AND c.state = 'settled'
                  AND c.task_id NOT IN (SELECT task_id FROM runs WHERE agent_id = ? AND ended_at IS NULL)
                GROUP BY c.task_id)
            """).run([.text(agentID), .text(agentID)]) { row in
            if !row.isNull(0) { average = Int64(row.real(0).rounded(.up)) }
        }
        averageTaskCost = average.map { USD(picodollars: $0) }
    }

    /// Chooses this run's mode. Alone, the run goes solo in the same transaction as the check, so a run
    /// registering at the same moment is either found here or finds this run solo. With live runs of the
    /// agent, it waits until none of them is solo, so their reservations are all in SQLite before it decides.
    private func join() throws(LedgerError) {
        let othersLive = try lock.withLock { _ throws(LedgerError) -> Bool in
            try connection.transaction { () throws(LedgerError) -> Bool in
                let live = try liveOthers()
                if !live.isEmpty { return true }
                try connection.prepare("UPDATE runs SET mode = 'solo' WHERE run_id = ?").run([.text(runID)])
                return false
            }
        }
        if !othersLive {
            solo.withLock { $0 = true }
            return
        }
        let deadline = Date().addingTimeInterval(Ledger.joinTimeout)
        while Date() < deadline {
            let waiting = try lock.withLock { _ throws(LedgerError) -> Int in try liveOthers().filter { $0.mode == "solo" }.count }
            if waiting == 0 { return }
            usleep(5_000)
        }
        logger.warning("a live run of this agent did not leave solo mode; deciding anyway", [("ledger", path), ("timeout_s", String(Ledger.joinTimeout))])
    }

    /// Returns the other runs of this agent that have not ended, with their mode.
    private func liveOthers() throws(LedgerError) -> [(run: String, mode: String)] {
        var runs: [(run: String, mode: String)] = []
        try connection.prepare("SELECT run_id, mode FROM runs WHERE agent_id = ? AND ended_at IS NULL AND run_id != ?")
            .run([.text(agentID), .text(runID)]) { runs.append(($0.text(0), $0.text(1))) }
        return runs
    }

    /// Leaves solo mode when another run of the agent has appeared: writes every pending reservation and
    /// marks this run shared in one transaction, under the lock solo admissions take. Returns to solo mode
    /// when no other run is live; the next admission then reads the others' calls again.
    private func checkMode() {
        var version: Int64 = 0
        let changed = lock.withLock { _ -> Bool in
            (try? selectDataVersion.run([]) { version = $0.integer(0) }) != nil && version != modeDataVersion
        }
        guard changed else { return }
        modeDataVersion = version
        solo.withLock { isSolo in
            do throws(LedgerError) {
                let others = try lock.withLock { _ throws(LedgerError) in try liveOthers() }
                if isSolo && !others.isEmpty {
                    let records = pending.withLock { queue in
                        defer { queue = [] }
                        return queue
                    }
                    try commits.run { () throws(LedgerError) in
                        for record in records { try apply(record, run: runID) }
                        try connection.prepare("UPDATE runs SET mode = 'shared' WHERE run_id = ?").run([.text(runID)])
                    }
                    isSolo = false
                    logger.info("another run of this agent started; deciding calls in shared transactions", [("ledger", path)])
                } else if !isSolo && others.isEmpty {
                    try commits.run { () throws(LedgerError) in
                        guard try liveOthers().isEmpty else { return }
                        try connection.prepare("UPDATE runs SET mode = 'solo' WHERE run_id = ?").run([.text(runID)])
                        isSolo = true
                        needsOthers = true
                    }
                }
            } catch {
                logger.error("ledger mode check failed", [("ledger", path), ("error", error.message)])
            }
        }
    }

    /// Starts the thread that writes settlements into SQLite in batches, a millisecond after the first of
    /// a batch arrives, and checkpoints the WAL once a second from a connection of its own.
    private func startWriter() {
        let path = path
        let logger = logger
        let signal = pendingSignal
        let thread = Thread { [weak self] in
            let checkpointer = try? SQLiteConnection(path: path)
            var lastCheckpoint = Date()
            while true {
                let interval = (self?.solo.withLock { $0 } ?? false) ? Ledger.soloPollInterval : 1
                let woken = signal.wait(timeout: .now() + interval) == .success
                guard let ledger = self else { return }
                if woken {
                    // Gathers the settlements of calls ending together into one transaction.
                    usleep(1_000)
                    ledger.writePending()
                }
                ledger.checkMode()
                if Date().timeIntervalSince(lastCheckpoint) >= 1 {
                    lastCheckpoint = Date()
                    do throws(LedgerError) {
                        try checkpointer?.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    } catch {
                        logger.warning("ledger checkpoint failed", [("ledger", path), ("error", error.message)])
                    }
                }
            }
        }
        thread.name = "mg-run ledger writer"
        thread.start()
    }

    /// Writes every queued settlement and release into SQLite; on failure they stay queued for the next try.
    func writePending() {
        let records = pending.withLock { queue in
            defer { queue = [] }
            return queue
        }
        guard !records.isEmpty else { return }
        do {
            try commits.run { () throws(LedgerError) in
                for record in records {
                    try apply(record, run: runID)
                }
            }
        } catch {
            logger.error("ledger settlement write failed; retrying", [("ledger", path), ("error", error.message), ("records", String(records.count))])
            pending.withLock { $0.insert(contentsOf: records, at: 0) }
        }
    }

    /// Applies one settlement or release of a run to its row.
    private func apply(_ record: SettlementJournal.Record, run: String) throws(LedgerError) {
        switch record {
        case .admitted(let id, let time, let tokens, let cost, let model, let actions):
            try insertLater.run([
                .text(run), .integer(Int64(bitPattern: id)), .real(time), .text(actions.joined(separator: "\n")), .text(model),
                .integer(tokens), .integer(cost), .text(run),
            ])
        case .settled(let id, let uncached, let cacheRead, let cacheWrite, let output, let cost, let estimated, let time):
            try settleCall.run([
                .integer(uncached), .integer(cacheRead), .integer(cacheWrite), .integer(output), .integer(cost), .integer(estimated ? 1 : 0),
                .real(time), .text(run), .integer(Int64(bitPattern: id)),
            ])
        case .released(let id, let time):
            try releaseCall.run([.real(time), .text(run), .integer(Int64(bitPattern: id))])
        }
    }

    private func removeReplayedJournals() {
        for path in replayedJournals { unlink(path) }
        replayedJournals = []
    }

    /// Queues a record for the writer, waking it when the queue was empty.
    private func enqueue(_ record: SettlementJournal.Record) {
        let wasEmpty = pending.withLock { queue -> Bool in
            queue.append(record)
            return queue.count == 1
        }
        if wasEmpty { pendingSignal.signal() }
    }

    // MARK: - SharedLedger

    /// Runs a batch of jobs in one transaction. A job that fails leaves the others alone; a failed commit fails them all.
    private func commit(_ batch: [GroupCommit.Job]) {
        lock.withLock { _ in
            do throws(LedgerError) {
                try connection.transaction { () throws(LedgerError) in
                    for job in batch {
                        do throws(LedgerError) {
                            try job.work()
                        } catch {
                            job.failure = error
                        }
                    }
                }
                removeReplayedJournals()
            } catch {
                replayedJournals = []
                for job in batch where job.failure == nil { job.failure = error }
            }
        }
    }

    public func admitting(since: Double, _ decide: ([SharedCall]?) -> LedgerReservation?) throws(LedgerFailure) {
        // Alone, the decision needs no transaction: the reservation is journaled and written a moment later.
        let decidedAlone = solo.withLock { isSolo -> Bool in
            guard isSolo, !needsOthers else { return false }
            guard let reservation = decide(nil) else { return true }
            let record = SettlementJournal.Record.admitted(id: reservation.id, time: reservation.time, tokens: reservation.tokens,
                                                           cost: reservation.cost.picodollars, model: reservation.model, actions: reservation.actions)
            journal(record)
            enqueue(record)
            return true
        }
        if decidedAlone { return }
        do {
            try commits.run { () throws(LedgerError) in
                let now = Date().timeIntervalSince1970
                var changed = false
                if now - lastRecovery >= Ledger.recoveryInterval {
                    changed = try recoverDeadRuns(now: now)
                }
                var version: Int64 = 0
                try selectDataVersion.run([]) { version = $0.integer(0) }
                var others: [SharedCall]?
                if version != lastDataVersion || changed {
                    lastDataVersion = version
                    others = try readOthers(since: since)
                }
                guard let reservation = decide(others) else { return }
                try insertCall.run([
                    .text(runID), .integer(Int64(bitPattern: reservation.id)), .text(agentID), .text(taskID), .real(reservation.time),
                    .text(reservation.actions.joined(separator: "\n")), .text(reservation.model),
                    .integer(reservation.tokens), .integer(reservation.cost.picodollars),
                ])
            }
        } catch {
            logger.error("ledger write failed", [("ledger", path), ("error", error.message)])
            throw LedgerFailure(message: "the ledger at \(path) cannot record the call (\(error.message))")
        }
        // The governor has the others' calls now, so a run alone may decide without a transaction.
        solo.withLock { _ in needsOthers = false }
    }

    /// Records a settlement: at once in the run's journal, and in SQLite by the writer a moment later.
    public func settled(id: UInt64, cost: USD, usage: Usage) {
        let record = SettlementJournal.Record.settled(
            id: id, uncached: Int64(usage.uncachedInputTokens), cacheRead: Int64(usage.cacheReadTokens),
            cacheWrite: Int64(usage.cacheWriteTokens + usage.cacheWrite1hTokens), output: Int64(usage.outputTokens),
            cost: cost.picodollars, estimated: usage.estimated, time: Date().timeIntervalSince1970)
        journal(record)
        enqueue(record)
    }

    public func released(id: UInt64) {
        let record = SettlementJournal.Record.released(id: id, time: Date().timeIntervalSince1970)
        journal(record)
        enqueue(record)
    }

    private func journal(_ record: SettlementJournal.Record) {
        let written: Bool
        switch record {
        case .admitted:
            written = journal.admitted(record)
        case .settled(let id, let uncached, let cacheRead, let cacheWrite, let output, let cost, let estimated, let time):
            written = journal.settled(id: id, uncached: Int(uncached), cacheRead: Int(cacheRead), cacheWrite: Int(cacheWrite),
                                      output: Int(output), cost: cost, estimated: estimated, time: time)
        case .released(let id, let time):
            written = journal.released(id: id, time: time)
        }
        if !written {
            // The writer still records it; only a crash before then would lose it.
            logger.error("settlement journal write failed", [("journal", journal.path), ("error", String(cString: strerror(errno)))])
        }
    }

    /// Marks the run ended. Calls still reserved are charged their reservation with `chargeReserved`
    /// (streams still running when mg-run exits), else released.
    public func finish(reason: String, chargeReserved: Bool) {
        writePending()
        defer { if pending.withLock({ $0.isEmpty }) { journal.remove() } }
        write("finish") { () throws(LedgerError) in
            let now = Date().timeIntervalSince1970
            let sql = chargeReserved
                ? "UPDATE calls SET state = 'settled', cost_picodollars = reserved_picodollars, estimated = 1, settled_at = ? WHERE run_id = ? AND state = 'reserved'"
                : "UPDATE calls SET state = 'released', settled_at = ? WHERE run_id = ? AND state = 'reserved'"
            try connection.prepare(sql).run([.real(now), .text(runID)])
            try connection.prepare("UPDATE runs SET ended_at = ?, end_reason = ? WHERE run_id = ?").run([.real(now), .text(reason), .text(runID)])
        }
    }

    private func write(_ what: String, _ body: () throws(LedgerError) -> Void) {
        do {
            try commits.run(body)
        } catch {
            // The response is already sent; the call stays reserved in the ledger, which over-counts and never under-counts.
            logger.error("ledger \(what) failed", [("ledger", path), ("error", error.message)])
        }
    }

    private func readOthers(since: Double) throws(LedgerError) -> [SharedCall] {
        var calls: [SharedCall] = []
        try selectOthers.run([.text(agentID), .real(since), .text(runID)]) { row in
            let settled = row.text(3) == "settled"
            calls.append(SharedCall(
                time: row.real(0), actions: row.text(1).split(separator: "\n").map(String.init), sameTask: row.text(2) == self.taskID,
                tokens: settled ? row.integer(6) : row.integer(4),
                cost: USD(picodollars: settled ? row.integer(7) : row.integer(5)), settled: settled))
        }
        return calls
    }

    /// Releases the reservations of runs whose process is gone. Returns whether it changed anything.
    @discardableResult
    private func recoverDeadRuns(now: Double) throws(LedgerError) -> Bool {
        lastRecovery = now
        var open: [(run: String, pid: Int32, identity: String)] = []
        try connection.prepare("SELECT run_id, pid, process_start FROM runs WHERE ended_at IS NULL AND run_id != ?").run([.text(runID)]) { row in
            open.append((row.text(0), Int32(truncatingIfNeeded: row.integer(1)), row.text(2)))
        }
        var changed = false
        // A run in another PID namespace (a sub-agent's parent, another container) cannot be checked
        // from here, so it is left alone. A process in its own namespace releases it.
        for run in open where ProcessIdentity.sameNamespace(run.identity) && ProcessIdentity.of(pid: run.pid) != run.identity {
            // What the dead run settled but had not yet written to SQLite is in its journal.
            let journalPath = SettlementJournal.path(ledger: path, runID: run.run)
            for record in SettlementJournal.records(at: journalPath) {
                try apply(record, run: run.run)
            }
            // Removed once the transaction commits; replaying a journal twice changes nothing.
            replayedJournals.append(journalPath)
            var released = 0
            try connection.prepare("SELECT count(*) FROM calls WHERE run_id = ? AND state = 'reserved'").run([.text(run.run)]) { released = Int($0.integer(0)) }
            try connection.prepare("UPDATE calls SET state = 'released', settled_at = ? WHERE run_id = ? AND state = 'reserved'")
                .run([.real(now), .text(run.run)])
            try connection.prepare("UPDATE runs SET ended_at = ?, end_reason = 'process gone' WHERE run_id = ?").run([.real(now), .text(run.run)])
            logger.warning("released the reservations of a run whose mg-run is gone", [("dead_run_id", run.run), ("pid", "\(run.pid)"), ("released", "\(released)")])
            changed = true
        }
        return changed
    }
}

/// Reader of /proc/PID/stat, whose process name, in parentheses, may contain spaces.
public enum ProcessStat {
    /// Returns the fields after the process name: state (field 3 in proc(5)) first. Nil when the process is gone.
    public static func fields(of pid: Int32) -> [Substring]? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    /// Returns field `number` (as numbered in proc(5), from 3) of `fields`, such as 4 (the parent) or 22 (the start time).
    public static func field(_ number: Int, of fields: [Substring]) -> UInt64? {
        guard number >= 3, fields.count > number - 3 else { return nil }
        return UInt64(fields[number - 3])
    }
}

/// Identifies a process across PID reuse: the boot id, its PID namespace and its start time in clock ticks.
enum ProcessIdentity {
    /// Returns whether an identity was recorded in this process's PID namespace, where its pid can be looked up.
    static func sameNamespace(_ identity: String) -> Bool {
        identity.hasPrefix("\(bootID):\(pidNamespace):")
    }

    static let pidNamespace: String = {
        var buffer = [CChar](repeating: 0, count: 64)
        let length = readlink("/proc/self/ns/pid", &buffer, buffer.count - 1)
        return length > 0 ? String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown"
    }()

    static func current() -> String { of(pid: getpid()) ?? "unknown" }

    static func of(pid: Int32) -> String? {
        // A zombie has exited: its mg-run can no longer settle anything.
        guard let fields = ProcessStat.fields(of: pid), let started = ProcessStat.field(22, of: fields), fields[0] != "Z" else { return nil }
        return "\(bootID):\(pidNamespace):\(started)"
    }

    static let bootID: String = (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
        .trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown-boot"
}
