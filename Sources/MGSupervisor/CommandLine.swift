import Dispatch
import Foundation
import MGLog
import MGPolicy
import MGProxy

public enum CommandLineInterface {
    public static let version = "0.1.0"

    public static let help = """
    mg-run \(version): run an AI agent under a spending policy

    Usage:
      mg-run [run] [options] -- COMMAND [ARG...]
      mg-run simulate [--port P] [--simulate-latency-ms N]
      mg-run check [--explain] FILE...
      mg-run exec [--profile strict|agent|FILE] [--timeout D] [options] -- COMMAND [ARG...]
      mg-run status
      mg-run pause|resume|stop RUN_ID|TASK_ID
      mg-run --help | --version

    mg-run starts a metering proxy on 127.0.0.1, runs COMMAND with
    OPENAI_BASE_URL, ANTHROPIC_BASE_URL and a per-run token in place of the real
    keys, enforces the policy on every LLM call, and stops the whole process
    tree when a task cost ceiling is spent or --max-duration passes.

    mg-run exec runs one program in a throwaway sandbox: no network, the file
    system read-only but a fresh /tmp, tight rlimits, and a wall-clock limit
    after which the whole tree is killed (default 60s). Run `mg-run exec --help`.

    mg-run check validates policy files and prints every error (exit 1) or
    "valid" (exit 0); --explain also prints each rule's limits as a table.

    Options for run:
      --policy FILE           policy layer (repeatable; every layer must allow a call)
      --prices FILE           price table (default: the shipped profiles/prices.yaml)
      --upstream SPEC         simulate | openai=URL | anthropic=URL (repeatable).
                              URL is the base URL as the SDK takes it:
                              http://host:port/v1 for OpenAI, http://host:port for
                              Anthropic. Default: the real providers, with the
                              OPENAI_API_KEY / ANTHROPIC_API_KEY of mg-run's environment.
      --task ID               task id for windows and the audit log (default: generated);
                              runs given the same ID share their per-task limits
      --agent-id ID           agent id (default: "default"); runs of one agent id share
                              per-minute, per-hour and per-day windows and the daily budget
      --tag TAG               run tag for agent_match (repeatable)
      --env NAME              run environment for agent_match (production, staging, ...)
      --trust-tier TIER       untrusted | basic (default) | verified | privileged
      --context KEY=VALUE     value of context.KEY in conditions (repeatable)
      --network MODE          proxy_only (default): the agent's network namespace has
                              only loopback, where the proxy listens; none: no proxy
                              either; host: the host's network, which lets the agent
                              go around the meter
      --pass-env NAME         keep the credential-like variable NAME in the agent's
                              environment (repeatable); others (*_API_KEY, *_TOKEN,
                              *SECRET*, *_PASSWORD, AWS_ACCESS_KEY_ID, SSH_AUTH_SOCK,
                              ...) are removed, and the provider keys always are
      --no-sandbox            run the agent without namespaces or seccomp (a warning
                              is logged); only when a policy layer names no
                              run.sandbox.profile other than none
      --ledger FILE           SQLite ledger of every call (default:
                              $XDG_STATE_HOME/mg-run/ledger.sqlite or
                              ~/.local/state/mg-run/ledger.sqlite)
      --summary FILE          write a JSON summary of the run to FILE
      --audit FILE            append one JSON line per call or decision to FILE
      --max-duration D        stop the run after D (90s, 30m, 8h)
      --kill-grace SECONDS    time between SIGTERM and SIGKILL when stopping (default 5)
      --simulate-latency-ms N with --upstream simulate: delay before each response
      --simulate-event-delay-ms N  with --upstream simulate: delay between streamed events

    Every call is recorded in the ledger before it is forwarded and settled
    after it, so daily windows and budgets hold across runs, concurrent runs
    and crashes of mg-run.

    Exit status: the command's own status when it ends by itself (128+N when
    killed by signal N); 124 when stopped at --max-duration; 125 when stopped by
    a policy limit; 130/143 when mg-run got SIGINT/SIGTERM; 126 command not
    executable; 127 command not found; 2 invalid arguments or policy; 70
    internal error.
    """

    /// Parses the arguments, runs the subcommand and returns the process exit status.
    public static func main(_ arguments: [String]) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        ProviderKeys.captureAndScrub()
        let logger = Logger()
        var rest = Array(arguments.dropFirst())
        if rest.first == "--help" || rest.first == "-h" || rest.first == "help" {
            print(help)
            return 0
        }
        if rest.first == "--version" {
            print("mg-run \(version)")
            return 0
        }
        if rest.first == "simulate" {
            return simulate(Array(rest.dropFirst()), logger: logger)
        }
        if rest.first == "exec" {
            return ExecCommand.run(Array(rest.dropFirst()), logger: logger)
        }
        if rest.first == "check" {
            return PolicyCheck.run(Array(rest.dropFirst()))
        }
        if let first = rest.first, ["status", "pause", "resume", "stop"].contains(first) {
            return ControlCommand.run(first, Array(rest.dropFirst()))
        }
        if rest.first == "run" { rest.removeFirst() }
        do {
            let options = try parseRun(rest)
            return try Run(options: options, logger: logger).execute()
        } catch {
            FileHandle.standardError.write(Data("mg-run: error: \(error.description)\n".utf8))
            return error.exitStatus
        }
    }

    static func parseRun(_ arguments: [String]) throws(RunError) -> RunOptions {
        var options = RunOptions()
        var cursor = OptionCursor(arguments, help: "mg-run --help")
        func value(_ name: String) throws(RunError) -> String {
            try cursor.value(name)
        }
        func number(_ name: String) throws(RunError) -> Int {
            let text = try value(name)
            guard let parsed = Int(text), parsed >= 0 else { throw RunError("invalid \(name) '\(text)'; expected a non-negative whole number") }
            return parsed
        }
        while let argument = cursor.nextOption() {
            switch argument {
            case "--policy": options.policyFiles.append(try value(argument))
            case "--prices": options.pricesFile = try value(argument)
            case "--upstream": options.upstreams.append(try value(argument))
            case "--task":
                let text = try value(argument)
                guard !text.isEmpty, text.utf8.count <= 200, !text.contains(where: { $0.isNewline }) else {
                    throw RunError("invalid --task '\(text)'; use an id of 1 to 200 characters on one line")
                }
                options.taskID = text
            case "--tag":
                let text = try value(argument)
                guard !text.isEmpty else { throw RunError("invalid --tag ''; give a tag name such as --tag research") }
                options.tags.append(text)
            case "--env":
                let text = try value(argument)
                guard !text.isEmpty, !text.contains(where: { $0.isNewline }) else {
                    throw RunError("invalid --env '\(text)'; give an environment name such as production")
                }
                options.environment = text
            case "--trust-tier":
                let text = try value(argument)
                guard let tier = TrustTier(name: text) else {
                    throw RunError("invalid --trust-tier '\(text)'; use one of \(TrustTier.allCases.map(\.description).joined(separator: ", "))")
                }
                options.trustTier = tier
            case "--context":
                let text = try value(argument)
                guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
                    throw RunError("invalid --context '\(text)'; write KEY=VALUE, such as --context region=eu")
                }
                options.context[String(text[..<equals])] = String(text[text.index(after: equals)...])
            case "--agent-id", "--agent-token":
                let text = try value(argument)
                guard !text.isEmpty, text.utf8.count <= 200, !text.contains(where: { $0.isNewline }) else {
                    throw RunError("invalid --agent-id '\(text)'; use a name of 1 to 200 characters on one line")
                }
                options.agentID = text
            case "--ledger": options.ledgerPath = try value(argument)
            case "--network":
                let text = try value(argument)
                guard let mode = NetworkMode(rawValue: text) else {
                    throw RunError("invalid --network '\(text)'; use proxy_only (default), none or host")
                }
                options.network = mode
            case "--no-sandbox": options.noSandbox = true
            case "--pass-env": options.passedVariables.append(try value(argument))
            case "--summary": options.summaryPath = try value(argument)
            case "--audit": options.auditPath = try value(argument)
            case "--max-duration":
                let text = try value(argument)
                guard let seconds = RunSettings.durationSeconds(text) else {
                    throw RunError("invalid --max-duration '\(text)'; use a number with a unit: 90s, 30m or 8h")
                }
                options.maxDurationSeconds = seconds
            case "--kill-grace":
                let text = try value(argument)
                guard let seconds = Double(text), seconds >= 0, seconds <= 3600 else {
                    throw RunError("invalid --kill-grace '\(text)'; expected seconds from 0 to 3600")
                }
                options.killGraceSeconds = seconds
            case "--simulate-latency-ms": options.simulateLatencyMilliseconds = try number(argument)
            case "--simulate-event-delay-ms": options.simulateEventDelayMilliseconds = try number(argument)
            default:
                throw RunError("unknown option '\(argument)'; see mg-run --help")
            }
        }
        options.command = cursor.command
        if !options.upstreams.contains("simulate") && (options.simulateLatencyMilliseconds > 0 || options.simulateEventDelayMilliseconds > 0) {
            throw RunError("--simulate-latency-ms and --simulate-event-delay-ms need --upstream simulate")
        }
        let providers = options.upstreams.compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) }
        if let repeated = providers.first(where: { name in providers.filter { $0 == name }.count > 1 }) {
            throw RunError("--upstream \(repeated)=... is given twice; keep one")
        }
        guard !options.command.isEmpty else {
            throw RunError("missing command; usage: mg-run --policy FILE -- COMMAND [ARG...]")
        }
        return options
    }

    static func simulate(_ arguments: [String], logger: Logger) -> Int32 {
        var port = 0
        var latency = 0
        var eventDelay = 0
        var index = 0
        while index < arguments.count {
            let name = arguments[index]
            guard index + 1 < arguments.count, let parsed = Int(arguments[index + 1]), parsed >= 0 else {
                FileHandle.standardError.write(Data("mg-run: error: \(name) needs a non-negative whole number; see mg-run --help\n".utf8))
                return ExitStatus.usage
            }
            switch name {
            case "--port":
                guard parsed <= 65_535 else {
                    FileHandle.standardError.write(Data("mg-run: error: invalid --port \(parsed); use 0 for any free port or 1 to 65535\n".utf8))
                    return ExitStatus.usage
                }
                port = parsed
            case "--simulate-latency-ms": latency = parsed
            case "--simulate-event-delay-ms": eventDelay = parsed
            default:
                FileHandle.standardError.write(Data("mg-run: error: unknown option '\(name)' for simulate; see mg-run --help\n".utf8))
                return ExitStatus.usage
            }
            index += 2
        }

        let server: HTTPServer
        do {
            server = try HTTPServer(port: port, handler: SimulatedProvider(latencyMilliseconds: latency, eventDelayMilliseconds: eventDelay))
        } catch {
            FileHandle.standardError.write(Data("mg-run: error: \(error.description)\n".utf8))
            return ExitStatus.internalError
        }
        logger.info("simulated provider listening", [("url", "http://127.0.0.1:\(server.port)"), ("latency_ms", String(latency))])
        FileHandle.standardOutput.write(Data("http://127.0.0.1:\(server.port)\n".utf8))

        let done = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { done.signal() }
            source.resume()
            sources.append(source)
        }
        done.wait()
        server.stop()
        return 0
    }
}

/// A reader of options and their values from the front of the arguments, up to the command: what follows
/// `--`, or everything from the first argument that does not start with `-`.
struct OptionCursor {
    private let arguments: [String]
    private var index = 0
    /// The help command that the message about a missing value points to, such as "mg-run exec --help".
    private let help: String
    /// The command, once `nextOption()` has returned nil.
    private(set) var command: [String] = []

    init(_ arguments: [String], help: String) {
        self.arguments = arguments
        self.help = help
    }

    /// Returns the next option, or nil where the options end, with the rest in `command`.
    mutating func nextOption() -> String? {
        guard index < arguments.count else { return nil }
        let argument = arguments[index]
        guard argument != "--", argument.hasPrefix("-") else {
            command = Array(arguments[(argument == "--" ? index + 1 : index)...])
            index = arguments.count
            return nil
        }
        index += 1
        return argument
    }

    /// Returns the value that follows the option `name`.
    mutating func value(_ name: String) throws(RunError) -> String {
        guard index < arguments.count else { throw RunError("missing value after \(name); see \(help)") }
        index += 1
        return arguments[index - 1]
    }
}
