/// A problem in a policy or price file, located by position and key path.
public struct PolicyError: Error, Sendable, CustomStringConvertible {
    public var position: SourcePosition
    /// The key path, such as `rules[2].rate_limit.max_per_hour`; empty for the document itself.
    public var path: String
    public var message: String

    public init(position: SourcePosition, path: String, message: String) {
        self.position = position
        self.path = path
        self.message = message
    }

    public var description: String {
        path.isEmpty ? "\(position): \(message)" : "\(position): \(path): \(message)"
    }
}

/// Every error found in a set of files, in file order, so a user can fix them all in one pass.
public struct PolicyErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [PolicyError]

    public init(_ errors: [PolicyError]) {
        self.errors = errors
    }

    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
