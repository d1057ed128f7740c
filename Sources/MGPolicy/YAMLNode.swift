import CYAML
import Foundation

/// A place in a source file, 1-based, as editors show it.
public struct SourcePosition: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// One node of a YAML document, with the position where it starts.
public struct YAMLNode: Sendable {
    public enum Value: Sendable {
        /// `plain` is false for quoted and block scalars, which YAML never reads as numbers or booleans.
        case scalar(String, plain: Bool)
        case sequence([YAMLNode])
        /// Keys in document order; duplicates are kept so the schema can report them.
        case mapping([(key: YAMLNode, value: YAMLNode)])
    }

    public var value: Value
    public var position: SourcePosition

    public var scalarText: String? {
        if case .scalar(let text, _) = value { return text }
        return nil
    }

    /// A short description of the node's kind, for error messages.
    public var kindName: String {
        switch value {
        case .scalar(let text, let plain):
            if plain && (text.isEmpty || text == "~" || text == "null") { return "null" }
            return plain ? "'\(text)'" : "the quoted string \"\(text)\""
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        }
    }
}

/// A file that could not be read or parsed as YAML.
public struct YAMLError: Error, CustomStringConvertible {
    public var position: SourcePosition
    public var message: String
    public var description: String { "\(position): \(message)" }
}

public enum YAMLLoader {
    /// Parses the first document of `text` with libyaml; an empty file is an empty mapping.
    public static func load(text: String, file: String) throws(YAMLError) -> YAMLNode {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else {
            throw YAMLError(position: SourcePosition(file: file, line: 1, column: 1), message: "libyaml could not allocate a parser")
        }
        defer { yaml_parser_delete(&parser) }

        var bytes = Array(text.utf8)
        var document = yaml_document_t()
        let loaded = bytes.withUnsafeMutableBufferPointer { buffer -> Int32 in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            return yaml_parser_load(&parser, &document)
        }
        guard loaded == 1 else {
            let mark = parser.problem_mark
            let problem = parser.problem.map { String(cString: $0) } ?? "invalid YAML"
            let context = parser.context.map { String(cString: $0) + ": " } ?? ""
            throw YAMLError(
                position: SourcePosition(file: file, line: Int(mark.line) + 1, column: Int(mark.column) + 1),
                message: "invalid YAML: \(context)\(problem)")
        }
        defer { yaml_document_delete(&document) }

        guard let root = yaml_document_get_root_node(&document) else {
            return YAMLNode(value: .mapping([]), position: SourcePosition(file: file, line: 1, column: 1))
        }
        return convert(root, document: &document, file: file, depth: 0)
    }

    private static func convert(_ node: UnsafeMutablePointer<yaml_node_t>, document: inout yaml_document_t, file: String, depth: Int) -> YAMLNode {
        let mark = node.pointee.start_mark
        let position = SourcePosition(file: file, line: Int(mark.line) + 1, column: Int(mark.column) + 1)
        // An alias that refers to its own ancestor would recurse forever; policies need no such depth.
        guard depth < 64 else { return YAMLNode(value: .scalar("", plain: true), position: position) }

        switch node.pointee.type {
        case YAML_SCALAR_NODE:
            let scalar = node.pointee.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            return YAMLNode(value: .scalar(text, plain: scalar.style == YAML_PLAIN_SCALAR_STYLE), position: position)
        case YAML_SEQUENCE_NODE:
            var items: [YAMLNode] = []
            var item = node.pointee.data.sequence.items.start
            while let current = item, current != node.pointee.data.sequence.items.top {
                if let child = yaml_document_get_node(&document, current.pointee) {
                    items.append(convert(child, document: &document, file: file, depth: depth + 1))
                }
                item = current + 1
            }
            return YAMLNode(value: .sequence(items), position: position)
        case YAML_MAPPING_NODE:
            var pairs: [(key: YAMLNode, value: YAMLNode)] = []
            var pair = node.pointee.data.mapping.pairs.start
            while let current = pair, current != node.pointee.data.mapping.pairs.top {
                if let keyNode = yaml_document_get_node(&document, current.pointee.key),
                   let valueNode = yaml_document_get_node(&document, current.pointee.value) {
                    pairs.append((convert(keyNode, document: &document, file: file, depth: depth + 1),
                                  convert(valueNode, document: &document, file: file, depth: depth + 1)))
                }
                pair = current + 1
            }
            return YAMLNode(value: .mapping(pairs), position: position)
        default:
            return YAMLNode(value: .scalar("", plain: true), position: position)
        }
    }
}
