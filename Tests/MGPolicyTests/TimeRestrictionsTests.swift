import Foundation
import Testing
@testable import MGPolicy

/// 1_800_000_000 is Friday 2027-01-15 08:00:00 UTC.
private let friday8 = 1_800_000_000.0

private func restrictions(_ yaml: String) throws -> TimeRestrictions {
    try #require(try PolicyLoader.parse(text: "time_restrictions:\n" + yaml + "\nrules: [{action: x}]\n", file: "t.yaml").timeRestrictions)
}

@Suite struct TimeRestrictionsTests {
    @Test func officeHours() throws {
        let window = try restrictions("  allowed_hours: {start: 9, end: 17}\n  allowed_days: [mon, tue, wed, thu, fri]")
        #expect(!window.allows(friday8))
        #expect(window.allows(friday8 + 3_600))
        #expect(window.allows(friday8 + 9 * 3_600 - 1))
        #expect(!window.allows(friday8 + 9 * 3_600))
        // Saturday 10:00 is outside the days.
        #expect(!window.allows(friday8 + 26 * 3_600))
    }

    @Test func wrapsPastMidnight() throws {
        let window = try restrictions("  allowed_hours: {start: 22, end: 6}\n  allowed_days: [fri]")
        // Friday 23:00 and Saturday 05:00 belong to Friday's window; Friday 05:00 belongs to Thursday's.
        #expect(window.allows(friday8 + 15 * 3_600))
        #expect(window.allows(friday8 + 21 * 3_600))
        #expect(!window.allows(friday8 - 3 * 3_600))
        #expect(!window.allows(friday8 + 3_600))
    }

    @Test func timeZoneShiftsHours() throws {
        // 08:00 UTC is 17:00 in Tokyo.
        let window = try restrictions("  allowed_hours: {start: 9, end: 17}\n  timezone: Asia/Tokyo")
        #expect(!window.allows(friday8))
        #expect(window.allows(friday8 - 3_600))
    }

    @Test func nextOpeningAndClosing() throws {
        let window = try restrictions("  allowed_hours: {start: 9, end: 17}")
        #expect(window.nextOpening(after: friday8 + 1_800) == friday8 + 3_600)
        #expect(window.nextClosing(after: friday8 + 3_600) == friday8 + 9 * 3_600)
    }

    @Test func loadsViolationAndMessage() throws {
        let window = try restrictions("  allowed_hours: {start: 9, end: 17}\n  on_violation: deny_with_message\n  violation_message: come back at nine")
        #expect(window.onViolation == .denyWithMessage)
        #expect(window.message == "come back at nine")
    }

    @Test func errorsNameTheFix() {
        do {
            _ = try PolicyLoader.parse(text: "time_restrictions:\n  allowed_hours: {start: 9, end: 25}\n  timezone: Mars/Olympus\n  allowed_days: [monday]\n", file: "t.yaml")
            Issue.record("expected errors")
        } catch {
            let found = error.errors.map(\.description)
            #expect(found.count == 3)
            #expect(found[0].contains("must be an hour from 0 to 24, got 25"))
            #expect(found[1].contains("unknown time zone 'Mars/Olympus'"))
            #expect(found[2].contains("invalid value 'monday'"))
        }
    }
}

@Suite struct RunSettingsLoadingTests {
    @Test func loadsEnforcedKeys() throws {
        let policy = try PolicyLoader.parse(text: """
            run:
              max_duration: 30m
              kill_grace_seconds: 2
              sandbox:
                network: none
                profile: strict
                writable: [/srv/work, /tmp]
                rlimits: {cpu_seconds: 60, memory_mb: 512, open_files: 256, file_size_mb: 10, processes: 64}
              code_execute: {interpreters: [python3, node]}
            rules: [{action: x}]
            """, file: "r.yaml")
        #expect(policy.run?.sandboxProfile == "strict")
        let relative = try PolicyLoader.parse(text: "run: {sandbox: {profile: seccomp/mine.seccomp}}\nrules: [{action: x}]\n", file: "/etc/mg-run/p.yaml")
        #expect(relative.run?.sandboxProfile == "/etc/mg-run/seccomp/mine.seccomp")
        #expect(policy.run?.writable == ["/srv/work", "/tmp"])
        #expect(policy.run?.codeExecute == CodeExecuteSettings(interpreters: ["python3", "node"]))
        #expect(policy.run?.maxDurationSeconds == 1_800)
        #expect(policy.run?.killGraceSeconds == 2)
        #expect(policy.run?.network == "none")
        #expect(policy.run?.rlimits == ["cpu_seconds": 60, "memory_mb": 512, "open_files": 256, "file_size_mb": 10, "processes": 64])
    }

    @Test func invalidRunValuesAreNamed() {
        do {
            _ = try PolicyLoader.parse(text: "run:\n  on_trip: freeze\n  max_duration: 5x\n  sandbox: {profile: strictest, writable: [work], rlimits: {processes: 0}}\n  code_execute: {interpreters: [/usr/bin/python3]}\n", file: "r.yaml")
            Issue.record("expected errors")
        } catch {
            let found = error.errors.map(\.description)
            #expect(found.count == 6)
            #expect(found.contains { $0.contains("run.on_trip: invalid value 'freeze'") })
            #expect(found.contains { $0.contains("invalid duration '5x'") })
            #expect(found.contains { $0.contains("run.sandbox.profile: unknown profile 'strictest'; use agent, strict, none, or the path of a .seccomp file") })
            #expect(found.contains { $0.contains("run.sandbox.writable: 'work' is not an absolute path") })
            #expect(found.contains { $0.contains("run.code_execute.interpreters: '/usr/bin/python3' is not a program name") })
            #expect(found.contains { $0.contains("run.sandbox.rlimits.processes: must be at least 1; remove the key for no limit") })
        }
    }
}
