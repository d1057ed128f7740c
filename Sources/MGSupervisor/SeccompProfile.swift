import CSeccomp
import Foundation
import MGPolicy

/// A seccomp profile from `profiles/seccomp/NAME.seccomp`, compiled here in mg-run and installed by the
/// tree's init last, just before exec.
///
/// The shipped profiles are allow lists over a default of ENOSYS: `agent` for agents, `strict` for
/// `mg-run exec` and `run.sandbox.profile: strict`. Whatever a profile contains, system calls of another
/// architecture (i386 through int 0x80) and of the x32 ABI fail with ENOSYS.
struct SeccompProfile {
    /// The profile's name, or the path it was read from.
    var name: String
    var rules: SeccompRules

    /// The names `run.sandbox.profile` and `--profile` accept besides a path.
    static let shippedNames = ["agent", "strict"]

    /// Loads the profile `name` (agent, strict) from the shipped profiles, or from the file `name` when it
    /// contains a slash or ends in `.seccomp`.
    static func load(_ name: String) throws(SpawnError) -> SeccompProfile {
        let path: String
        if SeccompRules.namesFile(name) {
            path = name
        } else {
            guard shippedNames.contains(name) else {
                throw SpawnError(description: "unknown sandbox profile '\(name)'; use \(shippedNames.joined(separator: ", ")), or the path of a .seccomp file", exitStatus: 2)
            }
            guard let found = Run.findShippedFile("seccomp/\(name).seccomp") else {
                throw SpawnError(description: "cannot find the seccomp profile seccomp/\(name).seccomp beside prices.yaml; reinstall mg-run or run it from its source tree (profiles/seccomp/)", exitStatus: 70)
            }
            path = found
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SpawnError(description: "cannot read the seccomp profile \(path); check that it exists and is readable", exitStatus: 2)
        }
        do {
            return SeccompProfile(name: name, rules: try SeccompRules.parse(text))
        } catch {
            throw SpawnError(description: "invalid seccomp profile \(path): \(error.description)", exitStatus: 2)
        }
    }

    /// Returns the BPF program (struct sock_filter[]) of the profile.
    func program() throws(SpawnError) -> [UInt8] {
        guard let context = seccomp_init(SeccompProfile.libseccompAction(rules.defaultAction)) else {
            throw SpawnError(description: "cannot build the seccomp filter of profile \(name): seccomp_init failed", exitStatus: 70)
        }
        defer { seccomp_release(context) }
        if seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, mg_seccomp_errno(ENOSYS)) != 0 {
            throw SpawnError(description: "cannot build the seccomp filter of profile \(name): libseccomp rejected the action for foreign architectures; update libseccomp", exitStatus: 70)
        }
        // libseccomp refuses a rule whose action is the default one; such a rule only documents the profile.
        for rule in rules.rules where rule.action != rules.defaultAction {
            let action = SeccompProfile.libseccompAction(rule.action)
            let comparisons: [(Int32, Int32, UInt64, UInt64)] = rule.anyOf.isEmpty ? [(-1, 0, 0, 0)] : rule.anyOf.map { condition in
                switch condition.comparison {
                case .equal(let value): (Int32(condition.argument), Int32(SCMP_CMP_EQ.rawValue), value, 0)
                case .notEqual(let value): (Int32(condition.argument), Int32(SCMP_CMP_NE.rawValue), value, 0)
                case .maskedEqual(let mask, let value): (Int32(condition.argument), Int32(SCMP_CMP_MASKED_EQ.rawValue), mask, value)
                }
            }
            for (argument, operation, first, second) in comparisons {
                let result = mg_seccomp_rule_compare(context, rule.systemCall, action, argument, operation, first, second)
                if result != 0 {
                    throw SpawnError(description: "seccomp profile \(name), line \(rule.line): libseccomp rejected the rule for \(rule.systemCall): \(String(cString: strerror(-result))); check that the rule does not conflict with another for the same system call", exitStatus: 2)
                }
            }
        }
        let fd = mg_seccomp_export(context)
        guard fd >= 0 else {
            throw SpawnError(description: "cannot export the seccomp filter: \(String(cString: strerror(-fd)))", exitStatus: 70)
        }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        var program = [UInt8](repeating: 0, count: Int(max(0, size)))
        let read = program.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard size > 0, read == size else {
            throw SpawnError(description: "cannot read the exported seccomp filter back", exitStatus: 70)
        }
        return program
    }

    private static func libseccompAction(_ action: SeccompRules.Action) -> UInt32 {
        switch action {
        case .allow: 0x7fff_0000  // SCMP_ACT_ALLOW
        case .errno(let value): mg_seccomp_errno(value)
        case .notify: mg_seccomp_notify_action()
        }
    }
}
