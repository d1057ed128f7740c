import Foundation

/// Context trimming with the `keep_recent_and_important` strategy of
/// `optimization.context_trimming`: drops the oldest turns of a chat request
/// until its estimated input fits `max_context_tokens`.
///
/// Always kept: system and developer messages wherever they are, every field
/// outside the message list (Anthropic's `system`, Responses' `instructions`,
/// tools, model, …), and the newest turn. A tool call and its results are
/// dropped or kept together. For Anthropic the first user message may be kept
/// too, so that the list still starts with a user turn. Kept messages are copied
/// byte for byte, so all but the white space between them goes upstream as the
/// client wrote it.
enum ContextTrimmer {
    /// A request shortened to fit.
    struct TrimmedRequest: Equatable, Sendable {
        var body: [UInt8]
        /// Messages dropped (input items for the Responses API). It is zero when
        /// removing the white space between messages was enough.
        var removedMessages: Int
        var estimatedTokensBefore: Int
        var estimatedTokensAfter: Int
    }

    enum Outcome: Equatable, Sendable {
        /// The request fits as sent, or is an embeddings request, which has no
        /// conversation to trim. The client's bytes go upstream unchanged.
        case unchanged
        case trimmed(TrimmedRequest)
        /// Even the messages that are always kept exceed the limit. The message
        /// names the limit and the smallest estimate trimming could reach.
        case cannotFit(minimumTokens: Int, message: String)
    }

    /// Drops the oldest messages of `body` until its estimated input tokens are at
    /// most `maxContextTokens`, or reports that it cannot.
    ///
    /// Pass `ParsedCall.body`, whose keys are already normalised. The estimates are
    /// the ones `ParsedCall.inputTokensEstimate` makes for the body before and after.
    /// Throws a 400 `ClientError` when the body is not a JSON object, lacks its
    /// message list, or contains a message that Foundation cannot parse.
    /// NOTE: history stored upstream under a Responses `previous_response_id` is
    /// neither counted nor trimmed.
    static func trim(body: [UInt8], endpoint: Endpoint, maxContextTokens: Int) throws(ClientError) -> Outcome {
        guard endpoint != .embeddings else { return .unchanged }
        let document = JSONDocument(body)
        guard let members = document.topLevelMembers()?.members else {
            throw ClientError(status: 400, message: "the request body is not a JSON object")
        }
        let listKey = endpoint == .responses ? "input" : "messages"
        guard let list = members[listKey] else {
            let message = endpoint == .responses ? "the request has no \"input\"" : "the request has no \"messages\" list"
            throw ClientError(status: 400, message: message)
        }
        guard body[list.lowerBound] == UInt8(ascii: "[") else {
            guard endpoint == .responses else {
                throw ClientError(status: 400, message: "the request has no \"messages\" list")
            }
            // A string input counts as one message and is never cut.
            let whole = estimatedTokens(bytes: body.count, items: 1, mediaParts: 0)
            return whole <= maxContextTokens ? .unchanged : cannotFit(minimum: whole, limit: maxContextTokens)
        }

        // The byte-level pass decides the common case, a request that fits, without Foundation.
        var messages: [Message] = []
        document.forEachElement(ofArrayAt: list.lowerBound) { range in
            messages.append(Message(range: range, mediaParts: countMediaParts(range, endpoint: endpoint, in: document)))
        }
        let before = estimatedTokens(bytes: body.count, items: messages.count,
                                     mediaParts: messages.reduce(0) { $0 + $1.mediaParts })
        guard before > maxContextTokens else { return .unchanged }

        let objects = try parseObjects(messages, listKey: listKey, in: body)
        for index in messages.indices {
            messages[index].role = objects[index]?["role"] as? String
            messages[index].isPinned = isPinned(objects[index], endpoint: endpoint)
        }
        let links = callLinks(objects, endpoint: endpoint, isPinned: messages.map(\.isPinned))
        let plan = Plan(messages: messages, links: links, fixedBytes: body.count - list.count + 2,
                        requiresLeadingUser: endpoint == .messages)
        return shorten(body, list: list, plan: plan, estimateBefore: before, limit: maxContextTokens)
    }

    /// Returns the request cut at the first place, oldest first, where it fits
    /// `limit`, or the smallest estimate any valid cut reaches.
    private static func shorten(_ body: [UInt8], list: Range<Int>, plan: Plan, estimateBefore: Int, limit: Int) -> Outcome {
        var minimum = Int.max
        for cut in plan.cuts {
            guard let anchor = plan.anchorLength(cut: cut) else { continue }
            let estimate = plan.estimatedTokens(cut: cut, anchor: anchor)
            guard estimate <= limit else {
                minimum = min(minimum, estimate)
                continue
            }
            let kept = plan.keptIndices(cut: cut, anchor: anchor)
            let trimmed = splice(kept.map { plan.messages[$0].range }, into: body, replacing: list)
            let after = estimatedTokens(bytes: trimmed.count, items: kept.count,
                                        mediaParts: kept.reduce(0) { $0 + plan.messages[$1].mediaParts })
            return .trimmed(TrimmedRequest(body: trimmed, removedMessages: plan.messages.count - kept.count,
                                           estimatedTokensBefore: estimateBefore, estimatedTokensAfter: after))
        }
        // Cut 0 keeps the request as sent and is always valid, so `minimum` is set.
        return cannotFit(minimum: minimum, limit: limit)
    }

    /// Returns the estimate `ParsedCall.inputTokensEstimate` makes for a body of
    /// `bytes` bytes with `items` messages or input items and `mediaParts` non-text
    /// parts: about four bytes of JSON a token, plus framing per message, plus a
    /// fixed amount per image or other media part. Every term grows with its
    /// argument, so removing a message never raises the estimate.
    /// NOTE: an estimate, not a tokenizer count. Code and non-Latin text can take
    /// more than one token per four bytes, so leave headroom in max_context_tokens.
    static func estimatedTokens(bytes: Int, items: Int, mediaParts: Int) -> Int {
        bytes / 4 + 4 * items + 3 + ParsedCall.tokensPerMediaPart * mediaParts
    }

    private static func cannotFit(minimum: Int, limit: Int) -> Outcome {
        let message = "the request needs an estimated \(minimum) input tokens even after dropping every older turn it can, "
            + "more than optimization.context_trimming.max_context_tokens (\(limit)). Raise max_context_tokens, "
            + "or shorten the system prompt or the newest turn, which are always kept."
        return .cannotFit(minimumTokens: minimum, message: message)
    }

    // MARK: - Reading the message list

    /// One element of the message list (or of the Responses `input` list).
    private struct Message {
        var range: Range<Int>
        var mediaParts: Int
        var role: String?
        /// System and developer messages, which are never dropped.
        var isPinned = false

        var bytes: Int { range.count }
    }

    /// Counts media parts the way `ParsedCall` does: in the `content` of chat
    /// messages, and anywhere in a Responses input item.
    private static func countMediaParts(_ range: Range<Int>, endpoint: Endpoint, in document: JSONDocument) -> Int {
        if endpoint == .responses { return ParsedCall.countMediaParts(range, in: document) }
        guard document.bytes[range.lowerBound] == UInt8(ascii: "{") else { return 0 }
        var count = 0
        document.forEachMember(ofObjectAt: range.lowerBound) { key, value in
            if document.bytes[key].elementsEqual("content".utf8) {
                count += ParsedCall.countMediaParts(value, in: document)
            }
        }
        return count
    }

    /// Parses each message on its own, so keys with escapes read correctly. An
    /// element that is not an object yields nil and is trimmed like any message.
    private static func parseObjects(_ messages: [Message], listKey: String, in body: [UInt8]) throws(ClientError) -> [[String: Any]?] {
        var objects: [[String: Any]?] = []
        for (index, message) in messages.enumerated() {
            guard let value = try? JSONSerialization.jsonObject(with: Data(body[message.range]), options: [.fragmentsAllowed]) else {
                throw ClientError(status: 400, message: "\"\(listKey)\"[\(index)] is not valid JSON in UTF-8")
            }
            objects.append(value as? [String: Any])
        }
        return objects
    }

    private static func isPinned(_ object: [String: Any]?, endpoint: Endpoint) -> Bool {
        guard let object, let role = object["role"] as? String, role == "system" || role == "developer" else { return false }
        switch endpoint {
        case .chatCompletions:
            return true
        case .responses:
            // A message item may omit its type; other item types have no role.
            let type = object["type"] as? String
            return type == nil || type == "message"
        case .messages, .embeddings:
            // Anthropic takes the system prompt only in the top-level `system` field.
            return false
        }
    }

    // MARK: - Calls and their results

    /// Pairs (earlier, later) of message indices that must be dropped or kept together.
    private typealias Link = (call: Int, result: Int)

    private static func callLinks(_ objects: [[String: Any]?], endpoint: Endpoint, isPinned: [Bool]) -> [Link] {
        switch endpoint {
        case .chatCompletions: return openAIChatLinks(objects)
        case .messages: return anthropicLinks(objects)
        case .responses: return responsesLinks(objects, isPinned: isPinned)
        case .embeddings: return []
        }
    }

    /// Links an assistant message's `tool_calls` to the `tool` messages whose
    /// `tool_call_id` matches one of them, and a legacy `function_call` to the
    /// `function` messages after it. A repeated call id belongs to its latest call.
    private static func openAIChatLinks(_ objects: [[String: Any]?]) -> [Link] {
        var links: [Link] = []
        var callOwner: [String: Int] = [:]
        var latestFunctionCall: Int?
        for (index, object) in objects.enumerated() {
            guard let object, let role = object["role"] as? String else { continue }
            switch role {
            case "assistant":
                for call in object["tool_calls"] as? [Any] ?? [] {
                    if let id = (call as? [String: Any])?["id"] as? String { callOwner[id] = index }
                }
                if object["function_call"] is [String: Any] { latestFunctionCall = index }
            case "tool":
                if let id = object["tool_call_id"] as? String, let owner = callOwner[id] { links.append((owner, index)) }
            case "function":
                if let owner = latestFunctionCall { links.append((owner, index)) }
            default:
                break
            }
        }
        return links
    }

    /// Links a content block with an `id` (`tool_use`, `server_tool_use`,
    /// `mcp_tool_use`) to a later message's block whose `tool_use_id` names it.
    private static func anthropicLinks(_ objects: [[String: Any]?]) -> [Link] {
        var links: [Link] = []
        var blockOwner: [String: Int] = [:]
        for (index, object) in objects.enumerated() {
            for case let block as [String: Any] in object?["content"] as? [Any] ?? [] {
                if let id = block["tool_use_id"] as? String, let owner = blockOwner[id], owner != index {
                    links.append((owner, index))
                }
                if let id = block["id"] as? String { blockOwner[id] = index }
            }
        }
        return links
    }

    /// Links a `*_call` item to the `*_call_output` with its `call_id`, an MCP
    /// approval request to the response naming its `id`, and a `reasoning` item
    /// to the item after it, because the API rejects either one without the other.
    private static func responsesLinks(_ objects: [[String: Any]?], isPinned: [Bool]) -> [Link] {
        var links: [Link] = []
        var callOwner: [String: Int] = [:]
        var itemOwner: [String: Int] = [:]
        var pendingReasoning: Int?
        for (index, object) in objects.enumerated() where !isPinned[index] {
            if let reasoning = pendingReasoning {
                links.append((reasoning, index))
                pendingReasoning = nil
            }
            guard let object else { continue }
            let type = object["type"] as? String ?? ""
            if let callID = object["call_id"] as? String {
                if type.hasSuffix("_output") {
                    if let owner = callOwner[callID] { links.append((owner, index)) }
                } else {
                    callOwner[callID] = index
                }
            }
            if let requestID = object["approval_request_id"] as? String, let owner = itemOwner[requestID] {
                links.append((owner, index))
            }
            if let id = object["id"] as? String { itemOwner[id] = index }
            if type == "reasoning" { pendingReasoning = index }
        }
        return links
    }

    // MARK: - Choosing what to keep

    /// The droppable messages of one request, oldest first, and the places where
    /// that list may be cut. A cut `p` drops the first `p` droppable messages.
    private struct Plan {
        let messages: [Message]
        /// Indices of the messages that are not pinned.
        let conversation: [Int]
        /// Indices of the pinned messages.
        let pinned: [Int]
        /// Cuts that separate no call from its result and keep the newest message, ascending.
        let cuts: [Int]
        /// Bytes of the body outside the message list, plus its brackets.
        let fixedBytes: Int
        /// Totals of the pinned messages, and running totals over the conversation,
        /// where `leading[p]` covers its first `p` messages.
        let pinnedTotal: Totals
        let leading: [Totals]
        /// Whether the first message must come from the user. Bedrock-hosted Claude
        /// rejects an assistant message first with a 400, as Anthropic's API did in 2024.
        let requiresLeadingUser: Bool

        init(messages: [Message], links: [Link], fixedBytes: Int, requiresLeadingUser: Bool) {
            self.messages = messages
            self.conversation = messages.indices.filter { !messages[$0].isPinned }
            self.pinned = messages.indices.filter { messages[$0].isPinned }
            self.fixedBytes = fixedBytes
            self.requiresLeadingUser = requiresLeadingUser

            var position = [Int?](repeating: nil, count: messages.count)
            for (offset, index) in conversation.enumerated() { position[index] = offset }
            // A link between positions a < b forbids the cuts a+1 through b, so each
            // link adds one at a+1 and removes it after b, and a cut is allowed where
            // the running sum is zero.
            var spanningLinks = [Int](repeating: 0, count: conversation.count + 2)
            for link in links {
                guard let first = position[link.call], let second = position[link.result], first < second else { continue }
                spanningLinks[first + 1] += 1
                spanningLinks[second + 1] -= 1
            }
            var linksOverCut = 0
            var cuts: [Int] = []
            // The last droppable message is the newest turn, so no cut passes it.
            for cut in 0..<max(conversation.count, 1) {
                linksOverCut += spanningLinks[cut]
                if linksOverCut == 0 { cuts.append(cut) }
            }
            self.cuts = cuts

            self.pinnedTotal = pinned.reduce(Totals()) { $0.adding(messages[$1]) }
            var leading = [Totals()]
            for index in conversation { leading.append(leading[leading.count - 1].adding(messages[index])) }
            self.leading = leading
        }

        /// Returns how many of the oldest droppable messages to keep in front of the
        /// cut, or nil when the cut leaves no user message first. When the cut would
        /// start with another role, the first group is kept as well if it is user
        /// messages only, which in an agent loop is usually the task. The anchor is
        /// always 0 unless `requiresLeadingUser` is set.
        func anchorLength(cut: Int) -> Int? {
            guard requiresLeadingUser, cut > 0, messages[conversation[cut]].role != "user" else { return 0 }
            // The first group ends at the first cut after 0.
            let firstGroupEnd = cuts.first { $0 > 0 } ?? cut
            let firstGroup = conversation[..<firstGroupEnd]
            return firstGroup.allSatisfy { messages[$0].role == "user" } ? firstGroupEnd : nil
        }

        func keptIndices(cut: Int, anchor: Int) -> [Int] {
            var kept = Set(pinned)
            kept.formUnion(conversation[..<anchor])
            kept.formUnion(conversation[cut...])
            return kept.sorted()
        }

        /// Returns the estimate for the body that keeps these messages, joined with single commas.
        func estimatedTokens(cut: Int, anchor: Int) -> Int {
            // Pinned messages, the anchor and the messages from the cut on do not overlap.
            let all = leading[conversation.count]
            let count = pinnedTotal.count + leading[anchor].count + all.count - leading[cut].count
            let bytes = pinnedTotal.bytes + leading[anchor].bytes + all.bytes - leading[cut].bytes
            let mediaParts = pinnedTotal.mediaParts + leading[anchor].mediaParts + all.mediaParts - leading[cut].mediaParts
            return ContextTrimmer.estimatedTokens(bytes: fixedBytes + bytes + max(0, count - 1), items: count, mediaParts: mediaParts)
        }
    }

    /// Message count, bytes and media parts of a set of messages.
    private struct Totals {
        var count = 0
        var bytes = 0
        var mediaParts = 0

        func adding(_ message: Message) -> Totals {
            Totals(count: count + 1, bytes: bytes + message.bytes, mediaParts: mediaParts + message.mediaParts)
        }
    }

    /// Returns `body` with the list at `list` replaced by the given elements, copied byte for byte.
    private static func splice(_ elements: [Range<Int>], into body: [UInt8], replacing list: Range<Int>) -> [UInt8] {
        var result = Array(body[..<list.lowerBound])
        result.append(UInt8(ascii: "["))
        for (offset, element) in elements.enumerated() {
            if offset > 0 { result.append(UInt8(ascii: ",")) }
            result.append(contentsOf: body[element])
        }
        result.append(UInt8(ascii: "]"))
        result.append(contentsOf: body[list.upperBound...])
        return result
    }
}
