import Foundation

/// The price of one model in picodollars per token (1e-12 USD), rounded up so
/// that a computed cost is never below the list price.
public struct ModelPrice: Sendable, Equatable {
    public var inputPerToken: Int64
    public var outputPerToken: Int64
    /// OpenAI cached prompt tokens and Anthropic cache reads.
    public var cachedInputPerToken: Int64
    /// Anthropic cache writes that live 5 minutes.
    public var cacheWritePerToken: Int64
    /// Anthropic cache writes with `ttl: 1h`. Twice the input price unless the table gives a price,
    /// because every 1-hour write price in litellm's table is twice the input price.
    public var cacheWrite1hPerToken: Int64
    /// The largest output the model accepts in one call, used when the client sets no max_tokens.
    public var maxOutputTokens: Int
    /// A fee per call on top of the tokens, in picodollars.
    public var perCall: Int64 = 0

    public init(inputPerToken: Int64, outputPerToken: Int64, cachedInputPerToken: Int64? = nil, cacheWritePerToken: Int64? = nil, maxOutputTokens: Int = 4096) {
        self.inputPerToken = inputPerToken
        self.outputPerToken = outputPerToken
        self.cachedInputPerToken = cachedInputPerToken ?? inputPerToken
        self.cacheWritePerToken = cacheWritePerToken ?? inputPerToken
        self.cacheWrite1hPerToken = 2 * inputPerToken
        self.maxOutputTokens = maxOutputTokens
    }

    /// The highest price an input token can be billed at when the request may write a prompt cache.
    public var inputPerTokenWritingCache: Int64 {
        max(inputPerToken, cacheWritePerToken, cacheWrite1hPerToken)
    }

    /// Builds a price from dollars per million tokens, as price lists give them.
    public init(inputPerMTok: USD, outputPerMTok: USD, cachedInputPerMTok: USD? = nil, cacheWritePerMTok: USD? = nil, maxOutputTokens: Int = 4096) {
        func perToken(_ perMillion: USD) -> Int64 { (perMillion.picodollars + 999_999) / 1_000_000 }
        self.init(inputPerToken: perToken(inputPerMTok), outputPerToken: perToken(outputPerMTok),
                  cachedInputPerToken: cachedInputPerMTok.map(perToken), cacheWritePerToken: cacheWritePerMTok.map(perToken),
                  maxOutputTokens: maxOutputTokens)
    }
}

/// Prices by model id. A lookup tries the exact id, then a listed id followed by
/// a dated snapshot suffix: "-2024-07-18", "-20250929" or "-0613". So
/// "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini", while "o3-pro" and
/// "gpt-4.5" are not priced as "o3" and "gpt-4".
public struct PriceTable: Sendable {
    public var models: [String: ModelPrice]
    /// A policy's `prices:` entries, by model glob; they win over `models`.
    public var overrides: [(glob: String, price: ModelPrice)] = []
    /// The day the prices were read, as written in the file.
    public var asOf: String
    public var file: String

    public init(models: [String: ModelPrice] = [:], asOf: String = "", file: String = "<memory>") {
        self.models = models
        self.asOf = asOf
        self.file = file
    }

    /// Returns the model's price. Policy entries may price a model the table lacks
    /// or raise a price, but never lower one. Every part of the price is the
    /// highest that the table and any matching entry give, so one layer cannot
    /// make another layer's dollar limits cheaper to pass.
    public func price(for model: String) -> ModelPrice? {
        var candidates = overrides.isEmpty ? [] : overrides.filter { Rule(action: $0.glob).matches(model) }.map(\.price)
        if let listed = listedPrice(for: model) { candidates.append(listed) }
        guard var highest = candidates.first else { return nil }
        for price in candidates.dropFirst() {
            highest.inputPerToken = max(highest.inputPerToken, price.inputPerToken)
            highest.outputPerToken = max(highest.outputPerToken, price.outputPerToken)
            highest.cachedInputPerToken = max(highest.cachedInputPerToken, price.cachedInputPerToken)
            highest.cacheWritePerToken = max(highest.cacheWritePerToken, price.cacheWritePerToken)
            highest.cacheWrite1hPerToken = max(highest.cacheWrite1hPerToken, price.cacheWrite1hPerToken)
            highest.perCall = max(highest.perCall, price.perCall)
        }
        // The table's output limit is the provider's; a policy entry only fills it in for unlisted models.
        if let listed = listedPrice(for: model) { highest.maxOutputTokens = listed.maxOutputTokens }
        return highest
    }

    private func listedPrice(for model: String) -> ModelPrice? {
        if let exact = models[model] { return exact }
        for (id, price) in models where model.hasPrefix(id + "-") {
            if PriceTable.isSnapshotSuffix(model.dropFirst(id.count + 1)) { return price }
        }
        return nil
    }

    /// Matches "2024-07-18", "20250929" and "0613".
    static func isSnapshotSuffix(_ suffix: Substring) -> Bool {
        let digits = suffix.filter(\.isNumber)
        guard suffix.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-") }) else { return false }
        switch suffix.count {
        case 4, 8: return digits.count == suffix.count
        case 10: return digits.count == 8 && suffix.split(separator: "-").map(\.count) == [4, 2, 2]
        default: return false
        }
    }

    public static func load(file: String) throws(PolicyErrors) -> PriceTable {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw PolicyErrors([PolicyError(position: SourcePosition(file: file, line: 1, column: 1), path: "",
                                            message: "cannot read the price table: \(error.localizedDescription)")])
        }
        return try parse(text: text, file: file)
    }

    public static func parse(text: String, file: String) throws(PolicyErrors) -> PriceTable {
        let root: YAMLNode
        do {
            root = try YAMLLoader.load(text: text, file: file)
        } catch {
            throw PolicyErrors([PolicyError(position: error.position, path: "", message: error.message)])
        }
        var reader = SchemaReader()
        var table = PriceTable(file: file)
        if let top = reader.mapping(root, path: "", supported: ["as_of", "source", "models"]) {
            if let node = top["as_of"] { table.asOf = reader.string(node, path: "as_of") ?? "" }
            if let node = top["source"] { _ = reader.string(node, path: "source") }
            if let node = top["models"], case .mapping(let pairs) = node.value {
                var seen: [String: Int] = [:]
                for (keyNode, valueNode) in pairs {
                    guard let id = keyNode.scalarText else { continue }
                    if let line = seen[id] {
                        reader.fail(keyNode, "models", "duplicate key '\(id)' (first at line \(line)); remove one of them")
                        continue
                    }
                    seen[id] = keyNode.position.line
                    if let price = readPrice(valueNode, path: "models.\(id)", reader: &reader) {
                        table.models[id] = price
                    }
                }
            } else if let node = top["models"] {
                reader.fail(node, "models", "expected a mapping from model id to price, got \(node.kindName)")
            }
        }
        if !reader.errors.isEmpty { throw PolicyErrors(reader.sortedErrors) }
        return table
    }

    static func readPrice(_ node: YAMLNode, path: String, reader: inout SchemaReader) -> ModelPrice? {
        let keys = ["input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok", "cache_write_1h_per_mtok", "max_output_tokens", "per_call"]
        guard let fields = reader.mapping(node, path: path, supported: keys) else { return nil }
        let perCall = fields["per_call"].flatMap { reader.dollars($0, path: "\(path).per_call") }
        guard fields["input_per_mtok"] != nil || fields["per_call"] != nil else {
            reader.fail(node, path, "missing key 'input_per_mtok'; give it, or per_call for a flat fee per call")
            return nil
        }
        guard let input = fields["input_per_mtok"].map({ reader.dollars($0, path: "\(path).input_per_mtok") }) ?? .zero else { return nil }
        let output = fields["output_per_mtok"].flatMap { reader.dollars($0, path: "\(path).output_per_mtok") } ?? .zero
        let cached = fields["cached_input_per_mtok"].flatMap { reader.dollars($0, path: "\(path).cached_input_per_mtok") }
        let cacheWrite = fields["cache_write_per_mtok"].flatMap { reader.dollars($0, path: "\(path).cache_write_per_mtok") }
        let maxOutput = fields["max_output_tokens"].flatMap { reader.count($0, path: "\(path).max_output_tokens") } ?? 4096
        var price = ModelPrice(inputPerMTok: input, outputPerMTok: output, cachedInputPerMTok: cached, cacheWritePerMTok: cacheWrite, maxOutputTokens: maxOutput)
        price.perCall = perCall?.picodollars ?? 0
        if let oneHour = fields["cache_write_1h_per_mtok"].flatMap({ reader.dollars($0, path: "\(path).cache_write_1h_per_mtok") }) {
            price.cacheWrite1hPerToken = (oneHour.picodollars + 999_999) / 1_000_000
        }
        return price
    }
}
