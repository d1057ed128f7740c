import Foundation
import MGGovernor
import MGPolicy

/// The outcome and totals of a run, written as JSON with --summary and as two lines on standard error.
struct Summary {
    var runID: String
    var taskID: String
    /// "completed", "failed" or "stopped".
    var outcome: String
    var stopReason: String?
    var exitStatus: Int32
    var totals: Totals
    var durationSeconds: Double

    func json() -> String {
        let fields: [(String, String)] = [
            ("run_id", jsonString(runID)),
            ("task_id", jsonString(taskID)),
            ("outcome", jsonString(outcome)),
            ("stop_reason", stopReason.map(jsonString) ?? "null"),
            ("exit_status", String(exitStatus)),
            ("calls", String(totals.calls)),
            ("denied", String(totals.denied)),
            ("concluded", String(totals.concluded)),
            ("unsettled_calls", String(totals.inFlight)),
            ("input_tokens", String(totals.inputTokens)),
            ("output_tokens", String(totals.outputTokens)),
            ("cost_usd", totals.cost.description),
            ("duration_s", String(format: "%.3f", durationSeconds)),
        ]
        return "{\n" + fields.map { "  \"\($0.0)\": \($0.1)" }.joined(separator: ",\n") + "\n}\n"
    }

    func humanReadable() -> String {
        var lines = ["mg-run: run \(runID) (task \(taskID)) \(outcome)" + (stopReason.map { ": \($0)" } ?? "") + ", exit status \(exitStatus)"]
        lines.append("mg-run: \(totals.calls) calls, \(totals.denied) denied, \(totals.inputTokens) input + \(totals.outputTokens) output tokens, \(totals.cost) USD in \(String(format: "%.1f", durationSeconds)) s")
        return lines.joined(separator: "\n") + "\n"
    }
}

func jsonString(_ text: String) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
    let array = String(decoding: data, as: UTF8.self)
    return String(array.dropFirst().dropLast())
}
