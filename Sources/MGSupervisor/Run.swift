import Dispatch
import Foundation
import MGGovernor
import MGLedger
import MGLog
import MGPolicy
import MGProxy
import Synchronization

/// Everything `mg-run run` needs, parsed from the command line.
public struct RunOptions: Sendable {
    public var policyFiles: [String] = []
    public var pricesFile: String?
    /// `simulate`, `openai=URL` or `anthropic=URL`.
    public var upstreams: [String] = []
    public var taskID: String?
    /// The agent id that windows and budgets of the ledger are shared under.
    public var agentID = "default"
    public var tags: [String] = []
    public var environment: String?
    public var trustTier = TrustTier.basic
    /// `--context k=v` values for conditions.
    public var context: [String: String] = [:]

    public var identity: RunIdentity {
        RunIdentity(agentID: agentID, tags: tags, environment: environment, trustTier: trustTier, context: context)
    }
    /// The SQLite ledger; nil for the default location.
    public var ledgerPath: String?
    /// The agent's network: nil for the default, proxy_only.
    public var network: NetworkMode?
    public var summaryPath: String?
    public var auditPath: String?
    public var maxDurationSeconds: Double?
    public var killGraceSeconds: Double = 5
    /// --no-sandbox: run the agent without namespaces or seccomp, which the user asked for explicitly.
    public var noSandbox = false
    /// --pass-env NAME: credential-like variables the agent may keep.
    public var passedVariables: [String] = []
    public var simulateLatencyMilliseconds = 0
    public var simulateEventDelayMilliseconds = 0
    public var command: [String] = []

    public init() {}
}

/// mg-run's own exit statuses, chosen to stay clear of the usual child statuses where conventions allow.
public enum ExitStatus {
    public static let usage: Int32 = 2
    public static let internalError: Int32 = 70
    /// The run was stopped at --max-duration, as timeout(1) does.
    public static let maxDuration: Int32 = 124
    /// The run was stopped by a policy limit, such as a spent task cost ceiling.
    public static let policyStop: Int32 = 125
    public static let notExecutable: Int32 = 126
    public static let notFound: Int32 = 127
}

public struct RunError: Error, CustomStringConvertible {
    public var description: String
    public var exitStatus: Int32

    public init(_ description: String, exitStatus: Int32 = ExitStatus.usage) {
        self.description = description
        self.exitStatus = exitStatus
    }
}

/// One governed run: the proxy, the process tree, the stop decision, the summary.
public final class Run: Sendable {
    let options: RunOptions
    let logger: Logger
    let runID: String
    let taskID: String
    private let stopReason = Mutex<String?>(nil)
    private let tree = Mutex<pid_t>(0)
    /// The tree's cgroup, for pause and resume; nil where cgroup2 is missing or not writable, as in a sub-agent.
    private let group = Mutex<ControlGroup?>(nil)
    /// The grace period between SIGTERM and SIGKILL: the shortest of --kill-grace and the layers' run.kill_grace_seconds.
    private let grace = Mutex<Double>(5)
    /// When the run started, and whether it is paused, for `mg-run status`.
    private let state = Mutex<(started: Date, paused: Bool)>((Date(), false))

    public init(options: RunOptions, logger: Logger = Logger()) {
        var options = options
        // A sub-agent is never trusted more than the run it was started in.
        if let parent = ParentRun.current(), options.trustTier > parent.trustTier {
            logger.warning("lowering this sub-agent's trust tier to its parent's", [("requested", options.trustTier.description), ("parent", parent.trustTier.description)])
            options.trustTier = parent.trustTier
        }
        self.options = options
        self.runID = randomHex(6)
        self.taskID = options.taskID ?? "task-\(randomHex(4))"
        self.logger = logger.with([("run_id", runID), ("task_id", taskID), ("agent_id", options.agentID)])
    }

    /// Runs the command to its end and returns mg-run's exit status. Call it on
    /// the main thread: the process tree dies with the thread that started it.
    public func execute() throws(RunError) -> Int32 {
        let started = Date()
        let layers = try loadPolicies()
        var prices = try loadPrices()
        prices.overrides = layers.flatMap(\.priceOverrides)
        // Found now, not after the agent has run for hours.
        if let path = options.summaryPath, !FileManager.default.createFile(atPath: path, contents: nil) {
            throw RunError("cannot create the summary file '\(path)'; check that its directory exists and is writable")
        }
        let parent = ParentRun.current()
        if parent == nil && ParentRun.insideGovernedRun() {
            throw RunError("this mg-run runs inside a governed run (PID 1 here is mg-run's init), but MG_RUN_URL or MG_RUN_TOKEN is missing; a sub-agent must keep the environment its parent set", exitStatus: ExitStatus.policyStop)
        }
        let delegation = try parent.map { parent throws(RunError) in try requestDelegation(from: parent) }
        defer { if let parent, let delegation { reportDelegation(to: parent, callID: delegation) } }
        let (upstreams, simulator) = try startUpstreams(layers, parent: parent)
        let onLimitExceeded = try limitResponse(layers, prices: prices)

        let token = "mgr-" + randomHex(24)
        let ledger: Ledger
        do {
            // A sub-agent can only read its parent's ledger, so by default it keeps one per depth beside it.
            let defaultPath = parent.map { Ledger.defaultPath().replacingOccurrences(of: "ledger.sqlite", with: "ledger-depth-\($0.depth + 1).sqlite") }
                ?? Ledger.defaultPath()
            ledger = try Ledger(path: options.ledgerPath ?? defaultPath, runID: runID, agentID: ledgerAgentID(parent: parent),
                                taskID: taskID, logger: logger)
        } catch {
            throw RunError("cannot open the \(error.description)")
        }
        // A start that fails from here on still ends the run's row, so the next run does not take it for a crash.
        var spawned = false
        defer {
            if !spawned {
                ledger.finish(reason: "failed to start", chargeReserved: false)
                // The summary file was created empty to find a bad path early; a run that never started has none.
                if let path = options.summaryPath { unlink(path) }
            }
        }
        let clock = Run.clock()
        let governor = Governor(layers: layers, time: clock, ledger: ledger, identity: options.identity, taskID: taskID)
        var audit: AuditLog?
        if let path = options.auditPath {
            do {
                audit = try AuditLog(path: path, runID: runID, taskID: taskID)
            } catch {
                throw RunError(error.description)
            }
        }
        var configuration = ProxyConfiguration(runID: runID, taskID: taskID, token: token, upstreams: upstreams, prices: prices, onLimitExceeded: onLimitExceeded)
        configuration.upstreamTimeoutSeconds = 600
        configuration.agentID = options.agentID
        configuration.context = options.context
        configuration.parent = parent.map { ($0.url, $0.token) }
        configuration.modelFallbacks = layers.flatMap { $0.optimization?.modelFallbacks ?? [] }
        configuration.maxContextTokens = layers.compactMap { $0.optimization?.maxContextTokens }.min()
        for layer in layers {
            for fallback in layer.optimization?.modelFallbacks ?? [] where prices.price(for: fallback.to) == nil {
                throw RunError("\(layer.file): \(fallback.path).fallback.to names llm:\(fallback.to), which has no price; add it under prices: or pick a priced model")
            }
        }
        // Free unknown models need a layer that allows them and none that denies them.
        let unknownModel = layers.compactMap(\.unknownModelAllowFree)
        configuration.unknownModelsFree = unknownModel.contains(true) && !unknownModel.contains(false)
        let proxy = MeteringProxy(configuration: configuration, governor: governor, audit: audit, logger: logger, onStop: { [self] reason in
            self.stop(reason)
        }, onPause: { [self] reason, seconds in
            self.pauseFromPolicy(reason, for: seconds)
        })
        // With proxy_only, the proxy listens inside the agent's network namespace, where the port is always free.
        let profile: SandboxChoice
        do {
            profile = try sandboxChoice(layers, parent: parent)
        } catch {
            throw RunError(error.description, exitStatus: error.exitStatus)
        }
        let network = try effectiveNetwork(isolation: profile.isolation, layerNetworks: layers.compactMap { $0.run?.network })
        grace.withLock { $0 = ([options.killGraceSeconds] + layers.compactMap { $0.run?.killGraceSeconds }).min() ?? options.killGraceSeconds }
        var hostServer: HTTPServer?
        if network != .proxyOnly {
            do {
                hostServer = try HTTPServer(handler: proxy)
            } catch {
                throw RunError("cannot start the proxy: \(error.description)", exitStatus: ExitStatus.internalError)
            }
        }
        let proxyURL = "http://127.0.0.1:\(hostServer?.port ?? Int(Run.sandboxProxyPort))"

        var environment = childEnvironment(proxyURL: proxyURL, token: token)
        if network == .proxyOnly {
            // The egress proxy listens beside the LLM proxy; the LLM proxy itself is reached directly.
            let egress = "http://127.0.0.1:\(Run.sandboxProxyPort + 1)"
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] { environment[name] = egress }
            for name in ["NO_PROXY", "no_proxy"] { environment[name] = "127.0.0.1,localhost" }
        }
        environment["MG_RUN_DEPTH"] = String((parent?.depth ?? -1) + 1)
        environment["MG_RUN_AGENT"] = ledgerAgentID(parent: parent)
        environment["MG_RUN_TRUST_TIER"] = options.trustTier.description
        for variable in layers.flatMap({ $0.upstreams.values.compactMap(\.keyVariable) }) {
            environment.removeValue(forKey: variable)
        }
        let tree: SpawnedTree
        var scratchDirectory: String?
        defer { if let scratchDirectory { rmdir(scratchDirectory) } }
        var processLimit: ProcessLimitGroup?
        defer { processLimit?.remove() }
        do throws(SpawnError) {
            let path = try Spawner.resolve(options.command[0], path: environment["PATH"])
            var sandbox = Sandbox(isolation: profile.isolation, network: network, listenPort: Run.sandboxProxyPort)
            if let seccomp = profile.seccomp {
                // code:execute: the tree's execs stop until mg-run has the policy decide on interpreters.
                sandbox.seccomp = try SeccompProfile(name: seccomp.name, rules: seccomp.rules.notifying(["execve", "execveat"])).program()
                sandbox.seccompListener = true
            }
            let cgroup = profile.isolation == .parentSandbox ? nil : ControlGroup.create(runID: runID)
            group.withLock { $0 = cgroup }
            let procs = cgroup?.openProcs() ?? -1
            defer { if procs >= 0 { close(procs) } }
            sandbox.cgroupProcsFD = procs
            if let processes = layers.compactMap({ $0.run?.rlimits["processes"] }).min() {
                if profile.isolation == .parentSandbox {
                    logger.warning("run.sandbox.rlimits.processes is not applied to a sub-agent, whose tree counts toward its parent's limit", [("processes", String(processes))])
                } else {
                    processLimit = try ProcessLimitGroup.create(runID: runID, limit: processes, runGroup: cgroup)
                }
            }
            let pidsProcs = processLimit?.openProcs() ?? -1
            defer { if pidsProcs >= 0 { close(pidsProcs) } }
            sandbox.pidsProcsFD = pidsProcs
            sandbox.limits = Run.resourceLimits(layers)
            sandbox.readOnly = readOnlyPaths(ledger: ledger)
            if let writable = Run.writablePaths(layers), profile.isolation == .namespaces {
                // Everything read-only but the listed paths, a private TMPDIR (a tmpfs on an empty directory of
                // the host's /tmp, which stays visible) and a private /dev/shm.
                let temporary = "/tmp/mg-run-\(runID)"
                guard mkdir(temporary, 0o700) == 0 else {
                    throw SpawnError(description: "cannot create the agent's temporary directory \(temporary): \(String(cString: strerror(errno))); check that /tmp is writable", exitStatus: ExitStatus.internalError)
                }
                scratchDirectory = temporary
                sandbox.readOnlyRoot = true
                sandbox.writable = writable
                sandbox.scratch = [temporary] + (writable.contains("/dev/shm") ? [] : ["/dev/shm"])
                environment["TMPDIR"] = temporary
            }
            tree = try Spawner.spawn(path: path, arguments: options.command, environment: environment, sandbox: sandbox)
        } catch {
            hostServer?.stop()
            simulator?.stop()
            throw RunError(error.description, exitStatus: error.exitStatus)
        }
        var codeMonitor: CodeExecuteMonitor?
        if tree.listenerFD >= 0 {
            // Every interpreter any layer lists, or the default list when no layer sets run.code_execute.
            var interpreters = CodeExecuteSettings()
            let lists = layers.compactMap { $0.run?.codeExecute?.interpreters }
            if !lists.isEmpty {
                interpreters.interpreters = lists.joined().reduce(into: []) { names, name in if !names.contains(name) { names.append(name) } }
            }
            codeMonitor = CodeExecuteMonitor(listener: tree.listenerFD, settings: interpreters, programPID: tree.programPID) { [logger, audit] execution in
                Run.decideCodeExecution(execution, sandbox: profile.seccomp?.name ?? "none", governor: governor, audit: audit, logger: logger)
            }
            codeMonitor?.start()
        }
        defer { codeMonitor?.stop() }
        let server: HTTPServer
        if let hostServer {
            server = hostServer
        } else {
            do {
                server = try HTTPServer(listening: tree.listenFD, port: Int(Run.sandboxProxyPort), handler: proxy)
            } catch {
                kill(tree.initPID, SIGKILL)
                simulator?.stop()
                throw RunError("cannot start the proxy in the agent's network namespace: \(error.description)", exitStatus: ExitStatus.internalError)
            }
        }
        spawned = true
        var egressProxy: EgressProxy?
        if tree.egressFD >= 0 {
            egressProxy = EgressProxy(listening: tree.egressFD, governor: governor, audit: audit, logger: logger,
                                      resolve: EgressProxy.resolveOverrides(ProcessInfo.processInfo.environment["MG_RUN_RESOLVE"]))
        }
        withExtendedLifetime(egressProxy) {}
        self.tree.withLock { $0 = tree.initPID }
        logger.info("run started", [("pid", String(tree.initPID)), ("proxy", proxyURL), ("network", network.rawValue), ("command", options.command[0])])

        var control: ControlSocket?
        do {
            control = try ControlSocket(runID: runID, logger: logger) { [self] command in
                switch command {
                case "status": break
                case "pause": if let error = self.pause() { return ["error": error] }
                case "resume": if let error = self.resume() { return ["error": error] }
                case "stop": self.stop("control:stop")
                default: return ["error": "unknown command '\(command)'; use status, pause, resume or stop"]
                }
                let totals = governor.totals
                let reason = self.stopReason.withLock { $0 }
                let paused = self.state.withLock { $0.paused }
                var state = "running"
                if reason != nil {
                    state = "stopping"
                } else if paused {
                    state = "paused"
                }
                return ["run_id": self.runID, "task_id": self.taskID, "agent_id": self.options.agentID, "state": state,
                        "calls": totals.calls, "cost_usd": Double(totals.cost.description) ?? 0, "pid": Int(tree.initPID)]
            }
        } catch {
            logger.warning("no control socket for this run; mg-run status will not list it", [("error", error.description)])
        }
        defer { control?.close() }
        let watching = Locked(true)
        defer { watching.withLock { $0 = false } }
        watchTimeRestrictions(layers, clock: clock, while: watching)
        // Triggers are checked after every settled call and, by this thread, at least once a second.
        if layers.contains(where: { !$0.triggers.isEmpty }) {
            let ticker = Thread {
                while watching.withLock({ $0 }) {
                    proxy.checkTriggers()
                    sleep(1)
                }
            }
            ticker.name = "mg-run triggers"
            ticker.start()
        }

        let signalSources = installSignalHandlers()
        if let limit = ([options.maxDurationSeconds] + layers.map { $0.run?.maxDurationSeconds }).compactMap({ $0 }).min() {
            DispatchQueue.global().asyncAfter(deadline: .now() + limit) { [self] in self.stop("max_duration") }
        }

        let childStatus = waitForTree(tree)
        withExtendedLifetime(signalSources) {}

        proxy.closeOpenChecks()
        // Streams the agent left behind settle as their upstreams finish; give them a moment.
        let drainDeadline = Date().addingTimeInterval(10)
        while governor.totals.inFlight > 0 && Date() < drainDeadline { usleep(20_000) }

        let reason = stopReason.withLock { $0 }
        let exitStatus = Run.exitStatus(childStatus: childStatus, stopReason: reason)
        let outcome = reason != nil ? "stopped" : (childStatus.map { $0 == 0 } ?? false) ? "completed" : "failed"
        var totals = governor.totals
        if totals.inFlight > 0 {
            // Streams still draining after the deadline are charged their full reservation.
            logger.warning("calls still in flight at exit; charging their reservations", [("calls", String(totals.inFlight))])
            totals.cost += totals.reserved
        }
        ledger.finish(reason: reason ?? outcome, chargeReserved: true)
        let summary = Summary(runID: runID, taskID: taskID, outcome: outcome, stopReason: reason, exitStatus: exitStatus, totals: totals,
                              durationSeconds: Date().timeIntervalSince(started))
        if let path = options.summaryPath {
            do {
                try summary.json().write(toFile: path, atomically: true, encoding: .utf8)
            } catch {
                logger.error("cannot write the summary", [("path", path), ("error", error.localizedDescription)])
            }
        }
        FileHandle.standardError.write(Data(summary.humanReadable().utf8))
        // Stopping the server waits for every connection thread; with calls still
        // in flight that could take minutes, and exiting ends them anyway.
        group.withLock { $0?.remove() }
        if totals.inFlight == 0 {
            server.stop()
            simulator?.stop()
        }
        return exitStatus
    }

    /// Decides to stop the run: SIGTERM to every process of the tree now, SIGKILL after the grace period.
    /// The first reason given is the one reported.
    public func stop(_ reason: String) {
        let first = stopReason.withLock { current -> Bool in
            guard current == nil else { return false }
            current = reason
            return true
        }
        guard first else { return }
        let graceSeconds = grace.withLock { $0 }
        logger.info("stop decided", [("reason", reason), ("grace_s", String(graceSeconds))])
        // Signals are sent under the lock, and the init is reaped only after the lock
        // has cleared its pid, so a signal never reaches a recycled pid.
        tree.withLock { pid in
            if pid > 0 { kill(pid, SIGTERM) }  // the init forwards it to every process in the namespace
        }
        // A frozen tree cannot handle SIGTERM, so it is thawed to use its grace period.
        _ = group.withLock { $0?.thaw() }
        DispatchQueue.global().asyncAfter(deadline: .now() + graceSeconds) { [self] in
            self.tree.withLock { pid in
                guard pid > 0 else { return }
                self.logger.info("grace period over; killing the process tree", [("pid", String(pid))])
                kill(pid, SIGKILL)  // kills the whole PID namespace
                _ = self.group.withLock { $0?.kill() }
            }
        }
    }

    /// Freezes every process of the tree; returns an error message when it cannot.
    public func pause() -> String? {
        guard let cgroup = group.withLock({ $0 }) else {
            return "this run has no cgroup to freeze (cgroup2 is not mounted or not writable, or it is a sub-agent)"
        }
        guard cgroup.freeze() else { return "the kernel did not report the cgroup \(cgroup.path) frozen within 2 s" }
        state.withLock { $0.paused = true }
        logger.info("run paused", [("cgroup", cgroup.path)])
        return nil
    }

    /// System directories a root agent could otherwise plant code in that runs outside the sandbox.
    static let readOnlySystemPaths = ["/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/opt",
                                      "/var/lib", "/var/spool", "/root/.bashrc", "/root/.profile", "/root/.ssh", "/dev/kmsg"]

    /// Returns the paths mounted read-only for the agent: the system directories and the files mg-run reads
    /// or writes for this run (ledger, journal, audit log, summary, policies, prices, the mg-run binary).
    private func readOnlyPaths(ledger: Ledger) -> [String] {
        var files = [ledger.path, ledger.path + "-wal", ledger.path + "-shm", ledger.journalPath]
        files += [options.auditPath, options.summaryPath, options.pricesFile].compactMap { $0 }
        files += options.policyFiles
        if let binary = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { files.append(binary) }
        return Run.readOnlySystemPaths + files.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    }

    /// Asks the policy about one code:execute: 0 lets the program run, EACCES refuses it.
    static func decideCodeExecution(_ execution: CodeExecution, sandbox: String, governor: Governor, audit: AuditLog?, logger: Logger) -> Int32 {
        var call = CallDescriptor(actions: ["code:execute"], model: "", price: ModelPrice(inputPerToken: 0, outputPerToken: 0, maxOutputTokens: 0),
                                  inputTokensBound: 0, inputTokensEstimate: 0, producesOutput: false)
        call.code = CodeFacts(language: execution.language, sandbox: sandbox, path: execution.path)
        var record = AuditRecord(action: "code:execute", model: nil, decision: "allow", reason: "exec \(execution.path) (\(execution.language))")
        let error: Int32
        switch governor.admit(call) {
        case .refuse(let refusal):
            record.decision = "deny"
            record.reason = "exec \(execution.path) (\(execution.language)) refused with EACCES: \(refusal.message)"
            record.status = 403
            logger.info("code:execute denied", [("path", execution.path), ("language", execution.language), ("reason", refusal.message)])
            error = EACCES
        case .admit(let admission):
            governor.settle(admission.id, cost: .zero, tokens: 0)
            record.status = 200
            error = 0
        }
        audit?.append(record)
        return error
    }

    /// Returns the paths that stay writable under a read-only root: those every layer that sets
    /// run.sandbox.writable lists (the strictest), or nil when no layer sets it.
    static func writablePaths(_ layers: [Policy]) -> [String]? {
        let lists = layers.compactMap { $0.run?.writable }
        guard let first = lists.first else { return nil }
        return first.filter { path in lists.allSatisfy { $0.contains(path) } }
    }

    /// Returns the layers' run.sandbox.rlimits as setrlimit arguments, the lowest value of each.
    static func resourceLimits(_ layers: [Policy]) -> [(resource: Int32, value: UInt64)] {
        let resources: [(key: String, resource: Int32, scale: UInt64)] = [
            ("cpu_seconds", Int32(RLIMIT_CPU.rawValue), 1), ("memory_mb", Int32(RLIMIT_AS.rawValue), 1 << 20),
            ("open_files", Int32(RLIMIT_NOFILE.rawValue), 1), ("file_size_mb", Int32(RLIMIT_FSIZE.rawValue), 1 << 20),
        ]
        return resources.compactMap { key, resource, scale in
            layers.compactMap { $0.run?.rlimits[key] }.min().map { (resource, UInt64($0) * scale) }
        }
    }

    /// mg-run's clock: the system clock, shifted by MG_RUN_CLOCK_OFFSET_SECONDS when tests set it.
    static func clock() -> any TimeSource {
        if let text = ProcessInfo.processInfo.environment["MG_RUN_CLOCK_OFFSET_SECONDS"], let offset = Double(text) {
            return OffsetTimeSource(offset: offset)
        }
        return SystemTimeSource()
    }

    /// Checks the layers' time_restrictions four times a second: outside the allowed hours, `pause` freezes the
    /// agent until they open and `kill` stops the run. deny and deny_with_message refuse calls in the governor.
    private func watchTimeRestrictions(_ layers: [Policy], clock: any TimeSource, while watching: Locked<Bool>) {
        let restrictions = layers.compactMap(\.timeRestrictions).filter { $0.onViolation == .pause || $0.onViolation == .kill }
        guard !restrictions.isEmpty else { return }
        let thread = Thread { [self] in
            var pausedByWindow = false
            while watching.withLock({ $0 }) {
                let now = clock.now()
                let closed = restrictions.filter { !$0.allows(now) }
                if let closing = closed.first(where: { $0.onViolation == .kill }) {
                    logger.warning("outside the allowed hours; stopping the run", [("window", closing.description)])
                    stop("time_restrictions")
                    return
                }
                if !closed.isEmpty && !pausedByWindow {
                    let opens = closed.compactMap { $0.nextOpening(after: now) }.max()
                    logger.info("outside the allowed hours; pausing the agent", [("window", closed[0].description),
                                                                                  ("opens_in_s", opens.map { String(Int($0 - now)) } ?? "never")])
                    pausedByWindow = pause() == nil
                } else if closed.isEmpty && pausedByWindow {
                    logger.info("the allowed hours began; resuming the agent")
                    _ = resume()
                    pausedByWindow = false
                }
                usleep(250_000)
            }
        }
        thread.name = "mg-run time restrictions"
        thread.start()
    }

    /// Freezes the tree for a policy action at once, so the agent gets the response that triggered it only
    /// when it is thawed, after `seconds` unless it was resumed or stopped before.
    func pauseFromPolicy(_ reason: String, for seconds: Double?) {
        if let error = pause() {
            logger.error("cannot pause the agent for the policy", [("reason", reason), ("error", error)])
            return
        }
        guard let seconds else { return }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [self] in
            guard self.state.withLock({ $0.paused }), self.stopReason.withLock({ $0 }) == nil else { return }
            _ = self.resume()
        }
    }

    public func resume() -> String? {
        guard let cgroup = group.withLock({ $0 }) else { return "this run has no cgroup to thaw" }
        guard cgroup.thaw() else { return "cannot thaw the cgroup \(cgroup.path)" }
        state.withLock { $0.paused = false }
        logger.info("run resumed", [("cgroup", cgroup.path)])
        return nil
    }

    /// Blocks until the init exits; returns the program's wait status, or nil if the init was killed first.
    private func waitForTree(_ tree: SpawnedTree) -> Int32? {
        var status: Int32 = 0
        let got = withUnsafeMutableBytes(of: &status) { Spawner.readFully(tree.statusFD, $0) }
        close(tree.statusFD)
        self.tree.withLock { $0 = 0 }
        var initStatus: Int32 = 0
        while waitpid(tree.initPID, &initStatus, 0) < 0 && errno == EINTR {}
        return got == 4 ? status : nil
    }

    static func exitStatus(childStatus: Int32?, stopReason: String?) -> Int32 {
        if let stopReason {
            if stopReason == "max_duration" { return ExitStatus.maxDuration }
            if stopReason.hasPrefix("signal:") { return 128 + (Int32(stopReason.dropFirst(7)) ?? 15) }
            return ExitStatus.policyStop
        }
        guard let status = childStatus else { return 128 + SIGKILL }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    private func installSignalHandlers() -> [DispatchSourceSignal] {
        [SIGINT, SIGTERM, SIGHUP].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in self.stop("signal:\(number)") }
            source.resume()
            return source
        }
    }

    // MARK: - Set-up

    private func loadPolicies() throws(RunError) -> [Policy] {
        guard !options.policyFiles.isEmpty else {
            throw RunError("missing --policy FILE; start from profiles/basic.yaml")
        }
        var layers: [Policy] = []
        var errors: [PolicyError] = []
        for file in options.policyFiles {
            do {
                layers.append(try PolicyLoader.load(file: file))
            } catch {
                errors += error.errors
            }
        }
        if !errors.isEmpty {
            throw RunError(PolicyErrors(errors).description)
        }
        // Layers whose agent_match does not fit this run do not apply.
        let identity = options.identity
        let applicable = layers.filter { $0.agentMatch?.mismatch(identity) == nil }
        if applicable.isEmpty {
            let reasons = layers.map { "\($0.file): \($0.agentMatch?.mismatch(identity) ?? "matches")" }
            throw RunError("no policy layer applies to this run (\(identity.summary)); \(reasons.joined(separator: "; ")); pass the options the layers name or add a layer without agent_match")
        }
        for layer in layers where layer.agentMatch?.mismatch(identity) != nil {
            logger.info("policy layer does not apply to this run", [("file", layer.file), ("reason", layer.agentMatch?.mismatch(identity) ?? "")])
        }
        layers = applicable
        // A layer without rules abstains, so with no rules anywhere nothing would be enforced.
        if layers.allSatisfy({ $0.rules.isEmpty }) {
            throw RunError("no rules in \(options.policyFiles.joined(separator: ", ")), so nothing would be enforced; add a rule such as: rules: [{action: \"llm:*\", cost_ceiling: {max_usd_per_task: 1.00}}]")
        }
        return layers
    }

    private func loadPrices() throws(RunError) -> PriceTable {
        guard let file = options.pricesFile ?? Run.defaultPricesFile() else {
            throw RunError("cannot find the price table prices.yaml; pass --prices FILE (the project ships profiles/prices.yaml)")
        }
        do {
            return try PriceTable.load(file: file)
        } catch {
            throw RunError(error.description)
        }
    }

    /// Finds the shipped price table under the executable's install prefix, or in the source tree it was built from.
    static func defaultPricesFile() -> String? {
        findShippedFile("prices.yaml")
    }

    /// Finds a file shipped in profiles/ (`prices.yaml`, `seccomp/agent.seccomp`): under the executable's
    /// install prefix (share/mg-run), in the source tree it was built from, or under the working directory.
    static func findShippedFile(_ relativePath: String) -> String? {
        let binary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let executable = URL(fileURLWithPath: binary).resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        var candidates = [directory.appendingPathComponent("../share/mg-run/\(relativePath)").path]
        for _ in 0..<5 {
            candidates.append(directory.appendingPathComponent("profiles/\(relativePath)").path)
            directory = directory.deletingLastPathComponent()
        }
        candidates.append(FileManager.default.currentDirectoryPath + "/profiles/\(relativePath)")
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// The sandbox the tree gets and the seccomp profile it runs under (nil without one).
    struct SandboxChoice {
        var isolation: Sandbox.Isolation
        var seccomp: SeccompProfile?
    }

    /// Chooses the sandbox: the strictest run.sandbox.profile of the layers (strict, then agent, then none),
    /// agent by default. A sub-agent stays in its parent's sandbox. `none` and --no-sandbox run without one,
    /// with a warning, and --no-sandbox conflicts with a layer that names a profile.
    private func sandboxChoice(_ layers: [Policy], parent: ParentRun?) throws(SpawnError) -> SandboxChoice {
        let named = layers.compactMap { layer in layer.run?.sandboxProfile.map { (layer.file, $0) } }
        if options.noSandbox, let (file, profile) = named.first(where: { $0.1 != "none" }) {
            throw SpawnError(description: "--no-sandbox conflicts with run.sandbox.profile: \(profile) in \(file); remove --no-sandbox, or use a policy that allows running without a sandbox", exitStatus: ExitStatus.usage)
        }
        if parent != nil {
            // Its parent's filter and namespaces confine it already, and forbid new ones.
            logger.info("this sub-agent runs in its parent's sandbox", [("depth", String((parent?.depth ?? 0) + 1))])
            return SandboxChoice(isolation: .parentSandbox, seccomp: nil)
        }
        let files = Set(named.map(\.1).filter(SeccompRules.namesFile))
        if files.count > 1 || (files.count == 1 && named.contains(where: { !SeccompRules.namesFile($0.1) && $0.1 != "none" })) {
            throw SpawnError(description: "the policy layers name different seccomp profiles (\(named.map { "\($0.0): \($0.1)" }.joined(separator: ", "))); keep run.sandbox.profile in one layer", exitStatus: ExitStatus.usage)
        }
        let names = named.map(\.1)
        var choice = "agent"
        if let file = files.first {
            choice = file
        } else if names.contains("strict") {
            choice = "strict"
        } else if !names.isEmpty && !names.contains("agent") {
            choice = "none"
        }
        if options.noSandbox || choice == "none" {
            logger.warning("running the agent WITHOUT a sandbox, as asked (\(options.noSandbox ? "--no-sandbox" : "run.sandbox.profile: none")): it can reach the network directly and go around the meter")
            return SandboxChoice(isolation: .none, seccomp: nil)
        }
        return SandboxChoice(isolation: .namespaces, seccomp: try SeccompProfile.load(choice))
    }

    /// The port the proxy listens on inside the agent's network namespace, where nothing else listens.
    static let sandboxProxyPort: UInt16 = 4480

    /// Returns the network mode the tree gets: the strictest of --network and the layers' run.sandbox.network,
    /// in the order none, proxy_only, host. A sub-agent stays in its parent's network namespace, which lets
    /// it reach only its parent's proxies; a run without a sandbox uses the host's network.
    private func effectiveNetwork(isolation: Sandbox.Isolation, layerNetworks: [String]) throws(RunError) -> NetworkMode {
        let order: [NetworkMode] = [.none, .proxyOnly, .host]
        let requested = ([options.network].compactMap { $0 } + layerNetworks.compactMap(NetworkMode.init(rawValue:)))
            .min { order.firstIndex(of: $0)! < order.firstIndex(of: $1)! } ?? .proxyOnly
        switch isolation {
        case .parentSandbox, .none:
            return .host
        case .namespaces:
            if requested == .host {
                logger.warning("network host: the agent can reach the network directly, so its calls can go around the meter")
            } else if !hasSystemAdministration() {
                throw RunError("network \(requested.rawValue) needs root (CAP_SYS_ADMIN) to open the proxy inside the agent's network namespace; run mg-run as root, or pass --network host to let the agent use the host's network", exitStatus: ExitStatus.internalError)
            }
            return requested
        }
    }

    /// Returns the agent id the ledger records this run under. A sub-agent's calls are also recorded by its
    /// parent, which meters them, so the sub-agent records them under an id of its own, `parent>child`,
    /// and the parent's daily windows do not count them twice.
    private func ledgerAgentID(parent: ParentRun?) -> String {
        guard let parent else { return options.agentID }
        return "\(parent.agentID)>\(options.agentID)"
    }

    /// Asks the parent run, through its check API, to allow this run as a `delegate:spawn` sub-agent; returns the check's call id.
    private func requestDelegation(from parent: ParentRun) throws(RunError) -> String {
        var context: [String: Any] = options.context
        context["depth"] = parent.depth + 1
        context["delegatee_agent_id"] = options.agentID
        context["delegatee_trust_tier"] = options.trustTier.description
        let response = SupervisorClient.postJSON(url: parent.url + "/mg/v1/check", token: parent.token,
                                                 object: ["action": "delegate:spawn", "context": context])
        if let failure = response.failure {
            throw RunError("this mg-run runs inside another governed run (MG_RUN_URL \(parent.url)), which did not respond to its delegate:spawn check: \(failure); run it outside the governed run or fix the parent", exitStatus: ExitStatus.internalError)
        }
        guard response.status == 200, let body = response.body else {
            throw RunError("the parent run's delegate:spawn check failed with HTTP \(response.status); check that the parent mg-run is the same version", exitStatus: ExitStatus.internalError)
        }
        guard body["allowed"] as? Bool == true, let callID = body["call_id"] as? String else {
            throw RunError("the parent run's policy denied this sub-agent (delegate:spawn at depth \(parent.depth + 1)): \(body["reason"] as? String ?? "no reason given")", exitStatus: ExitStatus.policyStop)
        }
        logger.info("parent run allowed this sub-agent", [("depth", String(parent.depth + 1)), ("parent", parent.url)])
        return callID
    }

    /// Tells the parent run the sub-agent has ended, which frees its max_concurrent slot. Its calls were metered by the parent already.
    private func reportDelegation(to parent: ParentRun, callID: String) {
        let response = SupervisorClient.postJSON(url: parent.url + "/mg/v1/report", token: parent.token,
                                                 object: ["call_id": callID, "cost_usd": 0, "success": true])
        if response.status != 200 {
            logger.warning("failed to report the end of this sub-agent to the parent run", [("status", String(response.status)), ("error", response.failure ?? "")])
        }
    }

    private func startUpstreams(_ layers: [Policy], parent: ParentRun?) throws(RunError) -> ([Provider: Upstream], HTTPServer?) {
        if options.upstreams.contains("simulate") {
            guard options.upstreams.count == 1 else {
                throw RunError("--upstream simulate cannot be combined with other --upstream values; use one or the other")
            }
            let simulator: HTTPServer
            do {
                simulator = try HTTPServer(handler: SimulatedProvider(latencyMilliseconds: options.simulateLatencyMilliseconds,
                                                                      eventDelayMilliseconds: options.simulateEventDelayMilliseconds))
            } catch {
                throw RunError("cannot start the simulated provider: \(error.description)", exitStatus: ExitStatus.internalError)
            }
            let base = "http://127.0.0.1:\(simulator.port)"
            return ([.openai: Upstream(baseURL: base + "/v1", apiKey: nil), .anthropic: Upstream(baseURL: base, apiKey: nil)], simulator)
        }
        var upstreams: [Provider: Upstream] = [:]
        for spec in options.upstreams {
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let provider = Provider(rawValue: parts[0]), parts[1].hasPrefix("http://") || parts[1].hasPrefix("https://") else {
                throw RunError("invalid --upstream '\(spec)'; use simulate, openai=http://HOST:PORT/v1 or anthropic=http://HOST:PORT")
            }
            upstreams[provider] = Upstream(baseURL: parts[1], apiKey: ProviderKeys.value(provider == .openai ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY"))
        }
        // Policy upstreams come after --upstream; two layers naming different ones for a provider is an error.
        var fromPolicy: [Provider: (file: String, upstream: Upstream)] = [:]
        for layer in layers {
            for (name, entry) in layer.upstreams {
                guard let provider = Provider(rawValue: name), upstreams[provider] == nil else { continue }
                var key: String?
                if let variable = entry.keyVariable {
                    guard let value = ProviderKeys.value(variable), !value.isEmpty else {
                        throw RunError("\(layer.file): upstreams.\(name).api_key_env names \(variable), which is not set in mg-run's environment; export it or remove api_key_env")
                    }
                    key = value
                }
                if let other = fromPolicy[provider], other.upstream.baseURL != Upstream(baseURL: entry.baseURL, apiKey: nil).baseURL {
                    throw RunError("\(other.file) and \(layer.file) set different upstreams.\(name).base_url; keep it in one layer")
                }
                fromPolicy[provider] = (layer.file, Upstream(baseURL: entry.baseURL, apiKey: key))
            }
        }
        for (provider, entry) in fromPolicy where upstreams[provider] == nil {
            upstreams[provider] = entry.upstream
        }
        // Inside a governed run, the parent's proxy is the upstream, so the parent meters every call too.
        if upstreams.isEmpty, let parent {
            return ([.openai: Upstream(baseURL: parent.url + "/v1", apiKey: parent.token), .anthropic: Upstream(baseURL: parent.url, apiKey: parent.token)], nil)
        }
        if upstreams.isEmpty {
            if let key = ProviderKeys.value("OPENAI_API_KEY"), !key.isEmpty {
                upstreams[.openai] = Upstream(baseURL: "https://api.openai.com/v1", apiKey: key)
            }
            if let key = ProviderKeys.value("ANTHROPIC_API_KEY"), !key.isEmpty {
                upstreams[.anthropic] = Upstream(baseURL: "https://api.anthropic.com", apiKey: key)
            }
            if upstreams.isEmpty {
                throw RunError("missing provider key: neither OPENAI_API_KEY nor ANTHROPIC_API_KEY is set in mg-run's environment; set one, or try the policy for free with --upstream simulate")
            }
            for provider in Provider.allCases where upstreams[provider] == nil {
                logger.warning("no key for this provider; its calls will fail with 502", [("provider", provider.rawValue)])
            }
        }
        return (upstreams, nil)
    }

    private func limitResponse(_ layers: [Policy], prices: PriceTable) throws(RunError) -> OnLimitExceeded {
        let set = layers.compactMap { layer in layer.onLimitExceeded.map { (layer.file, $0) } }
        guard let first = set.first else { return OnLimitExceeded() }
        if let conflict = set.first(where: { $0.1.action != first.1.action }) {
            throw RunError("\(first.0) and \(conflict.0) set different on_limit_exceeded.action values (\(first.1.action.rawValue), \(conflict.1.action.rawValue)); keep it in one layer")
        }
        // Every layer's fallback steps and notifications apply, in layer order.
        var merged = first.1
        merged.fallbackChain = set.flatMap(\.1.fallbackChain)
        merged.notify = set.flatMap(\.1.notify)
        for (file, response) in set {
            for step in response.fallbackChain {
                if case .model(let model) = step.to, prices.price(for: model) == nil {
                    throw RunError("\(file): on_limit_exceeded.fallback_chain moves calls to llm:\(model), which has no price; add it under prices: or pick a priced model")
                }
            }
        }
        return merged
    }

    /// mg-run's environment without the real provider keys, plus the proxy's address and the run token.
    private func childEnvironment(proxyURL: String, token: String) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        for name in ProviderKeys.names {
            environment.removeValue(forKey: name)
        }
        // Other services' credentials stay with mg-run unless passed on by name.
        let removed = environment.keys.filter { ProviderKeys.looksLikeCredential($0) && !options.passedVariables.contains($0) }.sorted()
        for name in removed { environment.removeValue(forKey: name) }
        if !removed.isEmpty {
            logger.info("kept credential-like variables out of the agent's environment; pass one on with --pass-env NAME", [("names", removed.joined(separator: ","))])
        }
        environment["OPENAI_BASE_URL"] = proxyURL + "/v1"
        environment["OPENAI_API_BASE"] = proxyURL + "/v1"
        environment["OPENAI_API_KEY"] = token
        environment["ANTHROPIC_BASE_URL"] = proxyURL
        environment["ANTHROPIC_API_KEY"] = token
        environment["MG_RUN_URL"] = proxyURL
        environment["MG_RUN_TOKEN"] = token
        environment["MG_RUN_TASK"] = taskID
        environment["MG_RUN_ID"] = runID
        return environment
    }
}

func randomHex(_ byteCount: Int) -> String {
    var generator = SystemRandomNumberGenerator()
    return (0..<byteCount).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
}

/// The governed run this mg-run was started in, when it is a sub-agent: from MG_RUN_URL, MG_RUN_TOKEN and MG_RUN_DEPTH.
struct ParentRun {
    var url: String
    var token: String
    /// The parent's depth; the top run is depth 0.
    var depth: Int
    var agentID: String
    /// The parent's trust tier; a sub-agent is never trusted more than its parent.
    var trustTier: TrustTier

    /// Returns whether this process runs in the PID namespace of a governed run, whose PID 1 is mg-run's init.
    static func insideGovernedRun() -> Bool {
        guard getpid() != 1, let name = try? String(contentsOfFile: "/proc/1/comm", encoding: .utf8) else { return false }
        return name.trimmingCharacters(in: .whitespacesAndNewlines) == "mg-run"
    }

    static func current() -> ParentRun? {
        let environment = ProcessInfo.processInfo.environment
        guard let url = environment["MG_RUN_URL"], url.hasPrefix("http://"), let token = ProviderKeys.value("MG_RUN_TOKEN"), !token.isEmpty else {
            return nil
        }
        return ParentRun(url: url, token: token, depth: environment["MG_RUN_DEPTH"].flatMap { Int($0) } ?? 0,
                         agentID: environment["MG_RUN_AGENT"] ?? "default",
                         trustTier: environment["MG_RUN_TRUST_TIER"].flatMap(TrustTier.init(name:)) ?? .untrusted)
    }
}
