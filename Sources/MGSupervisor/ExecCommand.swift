import Foundation
import MGLog
import MGPolicy

/// `mg-run exec`: runs one program in a throwaway sandbox, for agent frameworks that let the user set which
/// command runs the code they generate. The sandbox has no network, a read-only file system with a fresh
/// scratch directory, tight rlimits and the strict seccomp profile by default. Its wall-clock limit is
/// enforced by killing the whole PID namespace when a poll on the program's status times out.
enum ExecCommand {
    static let help = """
    mg-run exec: run one program in a throwaway sandbox

    Usage:
      mg-run exec [options] -- COMMAND [ARG...]

    The program and everything it starts run in new PID, mount, IPC, UTS and
    network namespaces: no network interface but loopback, every file read-only
    except an empty scratch directory /tmp/mg-run-exec-ID and a fresh /dev/shm
    (HOME and TMPDIR point at the scratch directory, which is gone afterwards),
    and the seccomp profile; the strict one refuses Unix sockets other than
    socketpair, so host daemons listening on socket files are out of reach.
    At the timeout, or on SIGINT/SIGTERM, every process of the tree is killed at
    once. Standard input, output and error are the caller's.

    Options:
      --profile NAME|FILE   seccomp profile: strict (default), agent, or a .seccomp file
      --timeout D           wall-clock limit: 500ms, 5s, 2m (default 60s)
      --memory-mb N         address-space limit of each process (default 4096)
      --scratch-mb N        size of the scratch directory and /dev/shm each (default 64)
      --open-files N        open-file limit (default 256)
      --env NAME            pass NAME from mg-run's environment (repeatable)

    Exit status: the program's own status (128+N when killed by signal N);
    124 when stopped at the timeout; 2 invalid arguments; 70 the sandbox could
    not be set up.
    """

    struct Options {
        var profile = "strict"
        var timeoutSeconds = 60.0
        var memoryMegabytes: UInt64 = 4096
        var scratchMegabytes: UInt64 = 64
        var openFiles: UInt64 = 256
        var passedVariables: [String] = []
        var command: [String] = []
    }

    static func run(_ arguments: [String], logger: Logger) -> Int32 {
        if arguments.first == "--help" || arguments.first == "-h" {
            print(help)
            return 0
        }
        do {
            return try execute(parse(arguments), logger: logger)
        } catch {
            FileHandle.standardError.write(Data("mg-run exec: error: \(error.description)\n".utf8))
            return error.exitStatus
        }
    }

    /// Parses "500ms", "5s", "2m", "1h" or a plain number of seconds.
    static func seconds(_ text: String) -> Double? {
        if text.hasSuffix("ms"), let value = Double(text.dropLast(2)), value > 0 { return value / 1000 }
        if let value = Double(text), value > 0 { return value }
        return RunSettings.durationSeconds(text)
    }

    static func parse(_ arguments: [String]) throws(RunError) -> Options {
        var options = Options()
        var cursor = OptionCursor(arguments, help: "mg-run exec --help")
        func value(_ name: String) throws(RunError) -> String {
            try cursor.value(name)
        }
        func count(_ name: String, range: ClosedRange<UInt64>) throws(RunError) -> UInt64 {
            let text = try value(name)
            guard let parsed = UInt64(text), range.contains(parsed) else {
                throw RunError("invalid \(name) '\(text)'; expected a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return parsed
        }
        while let argument = cursor.nextOption() {
            switch argument {
            case "--profile": options.profile = try value(argument)
            case "--timeout":
                let text = try value(argument)
                guard let parsed = seconds(text) else {
                    throw RunError("invalid --timeout '\(text)'; use a duration such as 500ms, 5s or 2m")
                }
                options.timeoutSeconds = parsed
            case "--memory-mb": options.memoryMegabytes = try count(argument, range: 16...1_048_576)
            case "--scratch-mb": options.scratchMegabytes = try count(argument, range: 1...1_048_576)
            case "--open-files": options.openFiles = try count(argument, range: 16...1_048_576)
            case "--env": options.passedVariables.append(try value(argument))
            default:
                throw RunError("unknown option '\(argument)' for exec; see mg-run exec --help")
            }
        }
        options.command = cursor.command
        guard !options.command.isEmpty else {
            throw RunError("missing command; usage: mg-run exec [--timeout 5s] -- COMMAND [ARG...]")
        }
        return options
    }

    static func execute(_ options: Options, logger: Logger) throws(RunError) -> Int32 {
        if ParentRun.insideGovernedRun() || !hasSystemAdministration() && ParentRun.current() != nil {
            throw RunError("mg-run exec cannot build its sandbox inside a governed run, whose sandbox forbids new namespaces; run mg-run exec outside the agent's run, or let the agent run the program in its own sandbox", exitStatus: ExitStatus.internalError)
        }
        let host = ProcessInfo.processInfo.environment
        let runID = randomHex(6)
        // The scratch tmpfs is mounted on an empty directory of the host's /tmp, which stays visible read-only,
        // so a program or script written there by the caller can still be run.
        let scratch = "/tmp/mg-run-exec-\(runID)"
        guard mkdir(scratch, 0o700) == 0 else {
            throw RunError("cannot create the scratch directory \(scratch): \(String(cString: strerror(errno))); check that /tmp is writable", exitStatus: ExitStatus.internalError)
        }
        defer { rmdir(scratch) }
        var environment = ["PATH": host["PATH"] ?? "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": host["LANG"] ?? "C.UTF-8"]
        for name in options.passedVariables {
            guard !ProviderKeys.names.contains(name) else {
                throw RunError("--env \(name) would pass a provider key into the sandbox; pass it some other way, or not at all")
            }
            if let value = host[name] { environment[name] = value }
        }
        let tree: SpawnedTree
        let cgroup: ControlGroup?
        do {
            let path = try Spawner.resolve(options.command[0], path: environment["PATH"])
            let profile = try SeccompProfile.load(options.profile)
            var sandbox = Sandbox(isolation: .namespaces, network: .none, seccomp: try profile.program())
            sandbox.limits = [
                (Int32(RLIMIT_AS.rawValue), options.memoryMegabytes << 20),
                (Int32(RLIMIT_NOFILE.rawValue), options.openFiles),
                (Int32(RLIMIT_FSIZE.rawValue), options.scratchMegabytes << 20),
                (Int32(RLIMIT_CORE.rawValue), 0),
                // A backstop for a tree that stops the wall clock from reaching it: CPU time past the timeout.
                (Int32(RLIMIT_CPU.rawValue), UInt64(options.timeoutSeconds.rounded(.up)) + 1),
            ]
            sandbox.readOnlyRoot = true
            sandbox.scratch = [scratch, "/dev/shm"]
            sandbox.scratchBytes = options.scratchMegabytes << 20
            cgroup = ControlGroup.create(runID: "exec-" + runID)
            let procs = cgroup?.openProcs() ?? -1
            defer { if procs >= 0 { close(procs) } }
            sandbox.cgroupProcsFD = procs
            tree = try Spawner.spawn(path: path, arguments: options.command, environment: environment, sandbox: sandbox)
        } catch {
            throw RunError(error.description, exitStatus: error.exitStatus)
        }
        defer { cgroup?.remove() }

        // SIGINT and SIGTERM end the wait below early, through a pipe the handlers write to.
        var wake: [Int32] = [-1, -1]
        _ = pipe(&wake)
        for fd in wake { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let signalWriter = wake[1]
        var sources: [DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { var byte = UInt8(number); _ = write(signalWriter, &byte, 1) }
            source.resume()
            sources.append(source)
        }
        defer {
            sources.forEach { $0.cancel() }
            close(wake[0])
            close(wake[1])
        }

        let deadline = Date().addingTimeInterval(options.timeoutSeconds)
        var stopped: String?
        var fds = [pollfd(fd: tree.statusFD, events: Int16(POLLIN), revents: 0), pollfd(fd: wake[0], events: Int16(POLLIN), revents: 0)]
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 {
                stopped = "timeout"
                break
            }
            let ready = poll(&fds, 2, Int32(min(remaining * 1000, 60_000).rounded(.up)))
            if ready < 0 && errno == EINTR { continue }
            if fds[0].revents != 0 { break }
            if fds[1].revents != 0 {
                var byte: UInt8 = 0
                _ = read(wake[0], &byte, 1)
                stopped = "signal:\(byte)"
                break
            }
        }
        if stopped != nil {
            // SIGKILL to the init ends every process of the PID namespace; the cgroup catches any in between.
            kill(tree.initPID, SIGKILL)
            _ = cgroup?.kill()
        }
        var status: Int32 = 0
        let got = withUnsafeMutableBytes(of: &status) { Spawner.readFully(tree.statusFD, $0) }
        close(tree.statusFD)
        var initStatus: Int32 = 0
        while waitpid(tree.initPID, &initStatus, 0) < 0 && errno == EINTR {}
        switch stopped {
        case "timeout":
            FileHandle.standardError.write(Data("mg-run exec: killed \(options.command[0]) and its processes at the \(options.timeoutSeconds)s timeout\n".utf8))
            return ExitStatus.maxDuration
        case let reason?:
            return 128 + (Int32(reason.dropFirst(7)) ?? SIGTERM)
        case nil:
            return Run.exitStatus(childStatus: got == 4 ? status : nil, stopReason: nil)
        }
    }
}
