import Foundation
import Synchronization

/// The real provider keys, read once at start-up and then blanked in mg-run's
/// own environment block. /proc/PID/environ shows that block's memory as it is
/// now, and the namespace init is cloned from it, so a process that can read
/// /proc does not find the keys there.
/// NOTE: this hides the keys from /proc/PID/environ only; a sandboxed /proc and
/// dropped capabilities are still needed against an agent that reads mg-run's memory.
public enum ProviderKeys {
    /// MG_RUN_TOKEN is a parent run's token when mg-run runs inside another governed run.
    static let names = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_ADMIN_KEY", "MG_RUN_TOKEN"]
    private static let captured = Mutex<[String: String]>([:])

    /// Copies the keys, then overwrites their values in place with '*'. Call it first thing in main.
    public static func captureAndScrub() {
        var found: [String: String] = [:]
        for name in names {
            if let value = getenv(name) { found[name] = String(cString: value) }
        }
        captured.withLock { $0 = found }
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if let name = names.first(where: { text.hasPrefix($0 + "=") }) {
                let valueStart = entry + name.utf8.count + 1
                memset(valueStart, Int32(UInt8(ascii: "*")), strlen(valueStart))
            }
            index += 1
        }
    }

    /// Names of credentials that do not follow the suffix patterns below.
    static let credentialNames: Set<String> = [
        "AWS_ACCESS_KEY_ID", "SSH_AUTH_SOCK", "GOOGLE_APPLICATION_CREDENTIALS", "DOCKER_AUTH_CONFIG", "KUBECONFIG",
    ]

    /// Returns whether a variable's name marks it as a credential: `*_API_KEY`, `*_TOKEN`, `*SECRET*`,
    /// `*_PASSWORD` and the like, or one of `credentialNames`.
    static func looksLikeCredential(_ name: String) -> Bool {
        let upper = name.uppercased()
        if credentialNames.contains(upper) || upper.contains("SECRET") { return true }
        let suffixes = ["_API_KEY", "_APIKEY", "_TOKEN", "_ACCESS_KEY", "_PRIVATE_KEY", "_PASSWORD", "_PASSWD", "_CREDENTIALS", "_AUTH"]
        return suffixes.contains { upper.hasSuffix($0) } || ["TOKEN", "PASSWORD", "API_KEY"].contains(upper)
    }

    public static func value(_ name: String) -> String? {
        captured.withLock { $0[name] } ?? ProcessInfo.processInfo.environment[name]
    }
}
