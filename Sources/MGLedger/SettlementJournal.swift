import Glibc

/// Reservations, settlements and releases of one run, appended to a file of their own before the ledger has them.
///
/// A settlement reaches SQLite in a background transaction shared with others, a few milliseconds
/// after the call. Until then it is durable in this file: one `write` of one line, which the kernel
/// keeps through a crash of mg-run. A process that finds the run dead replays the file into the
/// ledger before it releases what is left, so no settled call is lost.
final class SettlementJournal: @unchecked Sendable {
    // `fd` is written with one `write` per record; O_APPEND keeps concurrent records whole.
    let path: String
    private let fd: Int32

    /// Returns the journal file of a run, beside the ledger.
    static func path(ledger: String, runID: String) -> String {
        "\(ledger)-run-\(runID).journal"
    }

    init(path: String) throws(LedgerError) {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw LedgerError(path: path, message: "cannot create the run's settlement journal: \(String(cString: strerror(errno))); check that the ledger's directory is writable")
        }
    }

    deinit {
        close(fd)
    }

    /// Appends `A id time tokens cost model actions`, the actions joined by U+001F, for a reservation written later.
    func admitted(_ record: Record) -> Bool {
        guard case .admitted(let id, let time, let tokens, let cost, let model, let actions) = record else { return false }
        return append("A \(id) \(time) \(tokens) \(cost) \(SettlementJournal.field(model)) \(SettlementJournal.field(actions.joined(separator: "\u{1F}")))\n")
    }

    /// Keeps a client-chosen text on one line and in one field: spaces and newlines become U+001E.
    static func field(_ text: String) -> String {
        text.isEmpty ? "\u{1E}" : String(text.map { $0 == " " || $0.isNewline ? "\u{1E}" : $0 })
    }

    /// Appends `S id uncached cacheRead cacheWrite output cost estimated time`.
    func settled(id: UInt64, uncached: Int, cacheRead: Int, cacheWrite: Int, output: Int, cost: Int64, estimated: Bool, time: Double) -> Bool {
        append("S \(id) \(uncached) \(cacheRead) \(cacheWrite) \(output) \(cost) \(estimated ? 1 : 0) \(time)\n")
    }

    /// Appends `R id time`.
    func released(id: UInt64, time: Double) -> Bool {
        append("R \(id) \(time)\n")
    }

    private func append(_ line: String) -> Bool {
        var bytes = Array(line.utf8)
        return bytes.withUnsafeMutableBytes { buffer in
            var written = 0
            while written < buffer.count {
                let result = write(fd, buffer.baseAddress! + written, buffer.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                written += result
            }
            return true
        }
    }

    func remove() {
        unlink(path)
    }

    /// One record read back from a journal.
    enum Record {
        case admitted(id: UInt64, time: Double, tokens: Int64, cost: Int64, model: String, actions: [String])
        case settled(id: UInt64, uncached: Int64, cacheRead: Int64, cacheWrite: Int64, output: Int64, cost: Int64, estimated: Bool, time: Double)
        case released(id: UInt64, time: Double)
    }

    /// Reads a journal's records; a line cut short by a crash is skipped.
    static func records(at path: String) -> [Record] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line -> Record? in
            let fields = line.split(separator: " ")
            switch fields.first {
            case "S":
                guard fields.count == 9, let id = UInt64(fields[1]), let uncached = Int64(fields[2]), let cacheRead = Int64(fields[3]),
                      let cacheWrite = Int64(fields[4]), let output = Int64(fields[5]), let cost = Int64(fields[6]), let time = Double(fields[8])
                else { return nil }
                return .settled(id: id, uncached: uncached, cacheRead: cacheRead, cacheWrite: cacheWrite, output: output, cost: cost,
                                estimated: fields[7] == "1", time: time)
            case "A":
                guard fields.count == 7, let id = UInt64(fields[1]), let time = Double(fields[2]), let tokens = Int64(fields[3]),
                      let cost = Int64(fields[4]) else { return nil }
                let model = fields[5] == "\u{1E}" ? "" : String(fields[5])
                return .admitted(id: id, time: time, tokens: tokens, cost: cost, model: model,
                                 actions: fields[6].split(separator: "\u{1F}").map(String.init))
            case "R":
                guard fields.count == 3, let id = UInt64(fields[1]), let time = Double(fields[2]) else { return nil }
                return .released(id: id, time: time)
            default:
                return nil
            }
        }
    }
}
