/// `run.code_execute`: which programs the agent executes count as `code:execute` actions.
public struct CodeExecuteSettings: Sendable, Equatable {
    public static let defaultInterpreters = ["python", "python3", "node", "bash", "sh", "ruby", "perl"]

    /// Program names; a name also matches with a version suffix (`python3` matches `python3.11`).
    public var interpreters: [String]

    public init(interpreters: [String] = CodeExecuteSettings.defaultInterpreters) {
        self.interpreters = interpreters
    }

    /// Returns the interpreter name that `program` (a path or a name) runs as, or nil when it is not one of them.
    public func interpreter(of program: String) -> String? {
        let name = CodeExecuteSettings.baseName(program)
        if interpreters.contains(name) { return name }
        // The longest interpreter name that `name` extends by a version, so python3.11 is python3, not python.
        return interpreters.filter { interpreter in
            guard name.hasPrefix(interpreter), name.count > interpreter.count else { return false }
            let suffix = name.dropFirst(interpreter.count)
            return suffix.first.map { $0.isNumber || $0 == "." || $0 == "-" } == true && suffix.allSatisfy { $0.isNumber || $0 == "." || $0 == "-" }
        }.max { $0.count < $1.count }
    }

    /// Returns `code.language` for a program name: the name without its version, with the usual aliases
    /// (`python3.11` is python, `node` is javascript, `bash` and `sh` are shell).
    public static func language(of program: String) -> String {
        var name = Substring(baseName(program))
        while let last = name.last, last.isNumber || last == "." || last == "-" { name = name.dropLast() }
        switch name {
        case "node", "nodejs", "deno", "bun": return "javascript"
        case "sh", "bash", "dash", "zsh", "ksh", "ash", "fish": return "shell"
        case "": return baseName(program)
        default: return String(name)
        }
    }

    /// Reads the interpreter of a script from its first bytes (`#!/usr/bin/python3 -u`, or `#!/usr/bin/env python3`);
    /// nil when they do not start with `#!`.
    public static func shebangInterpreter(_ head: [UInt8]) -> String? {
        guard head.count > 2, head[0] == UInt8(ascii: "#"), head[1] == UInt8(ascii: "!") else { return nil }
        let line = head[2...].prefix { $0 != UInt8(ascii: "\n") }
        let words = String(decoding: line, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
        guard let first = words.first else { return nil }
        if baseName(first) == "env" {
            // `env -S python3 -u` and `env python3`: the first word that is not an option.
            return words.dropFirst().first { !$0.hasPrefix("-") && !$0.contains("=") }
        }
        return first
    }

    static func baseName(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}
