import Foundation
import Testing
@testable import MGPolicy

/// Reads a shipped seccomp profile from the source tree.
private func shipped(_ name: String) throws -> String {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return try String(contentsOf: root.appendingPathComponent("profiles/seccomp/\(name).seccomp"), encoding: .utf8)
}

private func parseError(_ text: String) -> String? {
    do {
        _ = try SeccompRules.parse(text)
        return nil
    } catch {
        return error.description
    }
}

@Suite struct SeccompRulesTests {
    @Test func parsesActionsConditionsAndComments() throws {
        let rules = try SeccompRules.parse("""
            # a comment
            default errno ENOSYS
            allow read write   # two calls
            errno EPERM ptrace
            notify execve
            allow prctl if arg0 != 22
            allow socket if arg0 == 1
            allow clone if arg0 & 0x7E020000 == 0
            errno EPERM clone if arg0 & 0x30 != 0
            """)
        #expect(rules.defaultAction == .errno(38))
        #expect(rules.rules.map(\.systemCall) == ["read", "write", "ptrace", "execve", "prctl", "socket", "clone", "clone"])
        #expect(rules.rules[2].action == .errno(1))
        #expect(rules.rules[3].action == .notify)
        #expect(rules.rules[4].anyOf == [.init(argument: 0, comparison: .notEqual(22))])
        #expect(rules.rules[5].anyOf == [.init(argument: 0, comparison: .equal(1))])
        #expect(rules.rules[6].anyOf == [.init(argument: 0, comparison: .maskedEqual(mask: 0x7E02_0000, value: 0))])
        // "Any bit set" becomes one masked comparison per bit.
        #expect(rules.rules[7].anyOf == [.init(argument: 0, comparison: .maskedEqual(mask: 0x10, value: 0x10)),
                                         .init(argument: 0, comparison: .maskedEqual(mask: 0x20, value: 0x20))])
        #expect(rules.rules[7].line == 9)
    }

    @Test(arguments: [
        ("allow read", "line 1: no default action; add a line such as 'default errno ENOSYS'"),
        ("default errno ENOSYS\npermit read", "line 2: unknown rule 'permit'; a line starts with default, allow, errno or notify"),
        ("default errno ENOSYS\nerrno EWHAT read", "line 2: errno needs an error name, one of EACCES, EAFNOSUPPORT, EINVAL, ENOENT, ENOSYS, EOPNOTSUPP, EPERM; got 'EWHAT'"),
        ("default errno ENOSYS\nallow", "line 2: 'allow' names no system call; list at least one, such as 'allow read write'"),
        ("default errno ENOSYS\nallow read\nerrno EPERM read", "line 3: read already has a rule on line 2; keep one, or add 'if' conditions"),
        ("default errno ENOSYS\nallow prctl if arg7 == 1", "line 2: invalid condition 'arg7 == 1'; write a condition as 'if arg0 == 22', 'if arg0 != 22', 'if arg0 & 0xFF == 0' or 'if arg0 & 0xFF != 0'"),
        ("default errno ENOSYS\nallow prctl if arg0 < 1", "line 2: unknown comparison '<'; write a condition as 'if arg0 == 22', 'if arg0 != 22', 'if arg0 & 0xFF == 0' or 'if arg0 & 0xFF != 0'"),
        ("default errno ENOSYS\nallow clone if arg0 & 0x0F == 0x10", "line 2: 0x10 has bits outside the mask 0x0F, so the condition is never true"),
        ("default errno ENOSYS\nallow clone if arg0 & 0x0F != 1", "line 2: a masked '!=' compares with 0 only, as in 'if arg0 & 0xFF != 0'"),
        ("default errno ENOSYS\ndefault allow", "line 2: a second default action; keep one"),
        ("default errno ENOSYS\nallow open-at", "line 2: 'open-at' is not a system call name"),
    ])
    func rejectsMistakesNamingTheLine(text: String, message: String) {
        #expect(parseError(text) == message)
    }

    @Test func notifyingReplacesTheRulesOfThoseCalls() throws {
        let rules = try SeccompRules.parse("default errno ENOSYS\nallow read execve execveat\n").notifying(["execve", "execveat"])
        #expect(rules.rules.map(\.systemCall) == ["read", "execve", "execveat"])
        #expect(rules.rules.filter { $0.action == .notify }.count == 2)
    }

    @Test(arguments: ["agent", "strict"])
    func shippedProfilesRefuseEscapes(name: String) throws {
        let rules = try SeccompRules.parse(try shipped(name))
        #expect(rules.defaultAction == .errno(38))
        let allowed = Set(rules.rules.filter { $0.action == .allow && $0.anyOf.isEmpty }.map(\.systemCall))
        for call in ["read", "write", "openat", "mmap", "futex", "execve", "wait4", "exit_group", "rt_sigreturn", "getrandom"] {
            #expect(allowed.contains(call), "\(name) must allow \(call)")
        }
        let refused = Set(rules.rules.filter { $0.action == .errno(1) && $0.anyOf.isEmpty }.map(\.systemCall))
        for call in ["ptrace", "mount", "unshare", "setns", "bpf", "kexec_load", "keyctl", "io_uring_setup", "seccomp", "init_module"] {
            #expect(refused.contains(call), "\(name) must refuse \(call)")
            #expect(!allowed.contains(call))
        }
        #expect(rules.rules.contains { $0.systemCall == "clone3" && $0.action == .errno(38) })
        #expect(rules.rules.contains { $0.systemCall == "prctl" && $0.action == .errno(1) && $0.anyOf == [.init(argument: 0, comparison: .equal(22))] })
        // Every namespace flag of clone is refused, one rule per bit.
        let cloneBits = rules.rules.filter { $0.systemCall == "clone" && $0.action == .errno(1) }.flatMap(\.anyOf)
        #expect(cloneBits.count == 7)
    }

    @Test func strictRefusesWhatAgentAllows() throws {
        let agent = try SeccompRules.parse(try shipped("agent"))
        let strict = try SeccompRules.parse(try shipped("strict"))
        let agentAllowed = Set(agent.rules.filter { $0.action == .allow }.map(\.systemCall))
        let strictAllowed = Set(strict.rules.filter { $0.action == .allow && $0.anyOf.isEmpty }.map(\.systemCall))
        #expect(strictAllowed.isSubset(of: agentAllowed))
        for call in ["setuid", "chown", "mknod", "setxattr", "sched_setattr", "mlock"] {
            #expect(agentAllowed.contains(call))
            #expect(strict.rules.contains { $0.systemCall == call && $0.action == .errno(1) })
        }
        // IPv4 and IPv6 sockets only: no named Unix sockets of host daemons.
        let families = strict.rules.filter { $0.systemCall == "socket" && $0.action == .allow }.flatMap(\.anyOf)
        #expect(families == [2, 10].map { .init(argument: 0, comparison: .equal($0)) })
        let refusedFamilies = strict.rules.filter { $0.systemCall == "socket" && $0.action == .errno(13) }.flatMap(\.anyOf)
        #expect(refusedFamilies.contains(.init(argument: 0, comparison: .equal(1))), "AF_UNIX fails with EACCES")
        #expect(refusedFamilies.contains(.init(argument: 0, comparison: .equal(16))), "AF_NETLINK fails with EACCES")
    }
}

@Suite struct CodeExecuteSettingsTests {
    @Test(arguments: [
        ("/usr/bin/python3", "python3"), ("python3.11", "python3"), ("/usr/bin/python", "python"), ("node", "node"),
        ("/bin/sh", "sh"), ("bash", "bash"), ("perl5.36", "perl"), ("ruby3.1", "ruby"),
    ])
    func matchesInterpretersWithVersions(program: String, interpreter: String) {
        #expect(CodeExecuteSettings().interpreter(of: program) == interpreter)
    }

    @Test(arguments: ["/usr/bin/env", "ls", "pythonista", "python3x", "/usr/bin/shellcheck", "nodemon", "bashbug", ""])
    func leavesOtherProgramsAlone(program: String) {
        #expect(CodeExecuteSettings().interpreter(of: program) == nil)
    }

    @Test func aCustomListReplacesTheDefault() {
        let settings = CodeExecuteSettings(interpreters: ["deno"])
        #expect(settings.interpreter(of: "/usr/local/bin/deno") == "deno")
        #expect(settings.interpreter(of: "python3") == nil)
    }

    @Test(arguments: [
        ("python3.11", "python"), ("/usr/bin/python3", "python"), ("node", "javascript"), ("nodejs", "javascript"),
        ("bash", "shell"), ("sh", "shell"), ("dash", "shell"), ("ruby", "ruby"), ("perl5.36", "perl"), ("Rscript", "Rscript"),
    ])
    func derivesTheLanguageFromTheName(program: String, language: String) {
        #expect(CodeExecuteSettings.language(of: program) == language)
    }

    @Test(arguments: [
        ("#!/usr/bin/python3 -u\nprint(1)", "/usr/bin/python3"), ("#!/usr/bin/env python3\n", "python3"),
        ("#! /bin/sh\n", "/bin/sh"), ("#!/usr/bin/env -S node --harmony\n", "node"), ("#!/usr/bin/env FOO=1 ruby\n", "ruby"),
    ])
    func readsTheShebangInterpreter(head: String, interpreter: String) {
        #expect(CodeExecuteSettings.shebangInterpreter(Array(head.utf8)) == interpreter)
    }

    @Test(arguments: ["\u{7f}ELF\u{2}\u{1}", "print(1)\n", "#", "#!", "#!\n"])
    func findsNoInterpreterWithoutAShebang(head: String) {
        #expect(CodeExecuteSettings.shebangInterpreter(Array(head.utf8)) == nil)
    }
}
