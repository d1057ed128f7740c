import CSQLite
import Foundation

/// An error from the ledger's database, with the file and what to do.
public struct LedgerError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String

    public var description: String { "ledger '\(path)': \(message)" }
}

/// One SQLite connection. Not thread-safe: the ledger serialises every use under its own lock.
final class SQLiteConnection {
    let path: String
    private(set) var handle: OpaquePointer?

    init(path: String) throws(LedgerError) {
        self.path = path
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let status = sqlite3_open_v2(path, &handle, flags, nil)
        guard status == SQLITE_OK else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            handle = nil
            throw LedgerError(path: path, message: "cannot open: \(message); check that the directory exists and is writable, or pass --ledger PATH")
        }
        // Several mg-run processes write the same file; a writer waits up to 10 s for another's transaction.
        sqlite3_busy_timeout(handle, 10_000)
    }

    deinit {
        sqlite3_close_v2(handle)
    }

    func error(_ what: String) -> LedgerError {
        LedgerError(path: path, message: "\(what) failed: \(String(cString: sqlite3_errmsg(handle)))")
    }

    func execute(_ sql: String) throws(LedgerError) {
        var message: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(handle, sql, nil, nil, &message) != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "unknown error"
            sqlite3_free(message)
            throw LedgerError(path: path, message: "\(sql.prefix(40))… failed: \(text)")
        }
    }

    func prepare(_ sql: String) throws(LedgerError) -> Statement {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil) == SQLITE_OK, let statement else {
            throw error("preparing \(sql.prefix(40))…")
        }
        return Statement(connection: self, handle: statement)
    }

    /// Prepared once: preparing BEGIN and COMMIT on every call cost measurable time per admission.
    private var begin: Statement?
    private var commit: Statement?

    /// Runs `body` in an IMMEDIATE transaction, which takes the database's write lock at once,
    /// and commits; rolls back when `body` throws.
    func transaction<T>(_ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        if begin == nil {
            begin = try prepare("BEGIN IMMEDIATE")
            commit = try prepare("COMMIT")
        }
        try begin!.run([])
        do {
            let result = try body()
            try commit!.run([])
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }
}

/// A prepared statement, reset before each use.
final class Statement {
    unowned let connection: SQLiteConnection
    let handle: OpaquePointer

    init(connection: SQLiteConnection, handle: OpaquePointer) {
        self.connection = connection
        self.handle = handle
    }

    deinit {
        sqlite3_finalize(handle)
    }

    enum Value {
        case integer(Int64)
        case real(Double)
        case text(String)
        case null
    }

    /// Binds the values, runs the statement and calls `row` for each result row.
    func run(_ values: [Value], row: ((Statement) -> Void)? = nil) throws(LedgerError) {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            switch value {
            case .integer(let number): sqlite3_bind_int64(handle, index, number)
            case .real(let number): sqlite3_bind_double(handle, index, number)
            case .text(let text): mg_sqlite_bind_text(handle, index, text)
            case .null: sqlite3_bind_null(handle, index)
            }
        }
        while true {
            let status = sqlite3_step(handle)
            if status == SQLITE_ROW {
                row?(self)
            } else if status == SQLITE_DONE {
                sqlite3_reset(handle)
                return
            } else {
                let error = connection.error("a statement")
                sqlite3_reset(handle)
                throw error
            }
        }
    }

    func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    func real(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }
    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
    func text(_ column: Int32) -> String {
        guard let bytes = sqlite3_column_text(handle, column) else { return "" }
        return String(cString: bytes)
    }
}
