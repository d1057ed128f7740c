import Foundation
import MGGovernor
import MGLog
import MGPolicy

/// The upstream server that receives one provider's calls.
public struct Upstream: Sendable {
    /// The base URL as that provider's SDK takes it: with `/v1` for OpenAI, without for Anthropic.
    public var baseURL: String
    /// The real key; it stays in mg-run and never reaches the agent.
    public var apiKey: String?

    public init(baseURL: String, apiKey: String?) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.apiKey = apiKey
    }
}

public struct ProxyConfiguration: Sendable {
    public var runID: String
    public var taskID: String
    public var agentID = "default"
    /// `optimization.model_fallback` rules of every layer, in order.
    public var modelFallbacks: [ModelFallback] = []
    /// The smallest `optimization.context_trimming.max_context_tokens` of the layers that enable it.
    public var maxContextTokens: Int?
    /// The proxy of the governed run this one runs in, if any: `delegate:*` checks are relayed to it,
    /// so every ancestor's policy decides on every sub-agent below it.
    public var parent: (url: String, token: String)?
    /// `--context` values, which every call carries.
    public var context: [String: String] = [:]
    /// The per-run token the agent must present instead of a provider key.
    public var token: String
    public var upstreams: [Provider: Upstream]
    public var prices: PriceTable
    public var onLimitExceeded: OnLimitExceeded
    public var upstreamTimeoutSeconds = 600
    /// Whether a model without a price is forwarded at zero cost instead of refused.
    public var unknownModelsFree = false
    /// The largest request body the proxy reads. Base64 images make requests large, so this is generous.
    public var maxRequestBytes = 64 << 20

    public init(runID: String, taskID: String, token: String, upstreams: [Provider: Upstream], prices: PriceTable, onLimitExceeded: OnLimitExceeded) {
        self.runID = runID
        self.taskID = taskID
        self.token = token
        self.upstreams = upstreams
        self.prices = prices
        self.onLimitExceeded = onLimitExceeded
    }
}

/// The agent's only way to the providers. It checks the run token, gets the
/// governor's decision before forwarding, caps the output to what was reserved,
/// forwards streams event by event, settles on the reported usage and audits
/// every call.
public final class MeteringProxy: HTTPHandler {
    /// Conclusion replies given after a task ceiling is spent, or after require_conclusion_after,
    /// before the run is stopped anyway, so an agent that ignores the message cannot loop on free
    /// replies forever. Replies within the grace period after the first do not count toward the stop,
    /// because a concurrent agent's calls already in flight get them too.
    /// NOTE: 3 replies and 10 s are judgement calls, not measured on real agents.
    static let conclusionsBeforeStop = 3
    static let conclusionGraceSeconds = 10.0

    let configuration: ProxyConfiguration
    let governor: Governor
    let audit: AuditLog?
    let logger: Logger
    let onStop: @Sendable (String) -> Void
    let curl = CurlPool()
    private let conclusions = Locked<(first: Date?, countedAfterGrace: Int)>((nil, 0))
    /// Redacts bodies for rules with `audit: detailed`.
    let redactor: Redactor
    /// Checks allowed by the check API and not reported yet, by call id.
    let openChecks = Locked<[String: (admission: Admission, action: String, started: Date, parentCallID: String?)]>([:])
    /// When each limit last sent its notify messages.
    private let notified = Locked<[String: Date]>([:])

    /// Freezes the agent for a number of seconds (nil: until resumed), for the `pause` actions.
    let onPause: @Sendable (String, Double?) -> Void

    public init(configuration: ProxyConfiguration, governor: Governor, audit: AuditLog?, logger: Logger, onStop: @escaping @Sendable (String) -> Void,
                onPause: @escaping @Sendable (String, Double?) -> Void = { _, _ in }) {
        self.configuration = configuration
        self.governor = governor
        self.audit = audit
        self.logger = logger
        self.onStop = onStop
        self.onPause = onPause
        self.redactor = Redactor(secrets: [configuration.token] + configuration.upstreams.values.compactMap(\.apiKey))
    }

    public var maxBodyBytes: Int { configuration.maxRequestBytes }

    /// Rejects a request without the run token before its body is read.
    public func preflight(_ request: HTTPRequest) -> HTTPResponse? {
        guard !isAuthorized(request) else { return nil }
        record(AuditRecord(action: "http:\(request.method) \(request.path)", model: nil, decision: "deny", reason: "missing or invalid run token"),
               status: 401, started: Date())
        return ErrorBody.response(provider(of: request), status: 401, type: "invalid_request_error", code: "invalid_api_key",
                                  message: "missing or invalid API key: use the per-run token that mg-run put in OPENAI_API_KEY / ANTHROPIC_API_KEY")
    }

    public func oversizedBody(_ request: HTTPRequest) -> HTTPResponse {
        let message = "the request body is larger than mg-run's limit of \(maxBodyBytes) bytes; send a smaller request"
        logger.warning("request body too large", [("path", request.path), ("limit_bytes", String(maxBodyBytes))])
        record(AuditRecord(action: "http:\(request.method) \(request.path)", model: nil, decision: "deny", reason: message), status: 413, started: Date())
        return ErrorBody.response(provider(of: request), status: 413, type: "invalid_request_error", code: "request_too_large", message: message)
    }

    /// Returns Anthropic for clients that send `x-api-key` or `anthropic-version`, and OpenAI for the rest.
    private func provider(of request: HTTPRequest) -> Provider {
        request.headers["x-api-key"] != nil || request.headers["anthropic-version"] != nil || request.path == "/v1/messages" ? .anthropic : .openai
    }

    /// Serves a request that passed `preflight`.
    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        let started = Date()
        switch (request.method, request.path) {
        case ("POST", "/v1/chat/completions"): return meter(request, endpoint: .chatCompletions, started: started)
        case ("POST", "/v1/messages"): return meter(request, endpoint: .messages, started: started)
        case ("POST", "/v1/embeddings"): return meter(request, endpoint: .embeddings, started: started)
        case ("POST", "/v1/responses"): return meter(request, endpoint: .responses, started: started)
        case ("GET", "/v1/models"): return listModels(request, provider: provider(of: request), started: started)
        case ("POST", MeteringProxy.checkPath): return check(request, started: started)
        case ("POST", MeteringProxy.reportPath): return report(request, started: started)
        default:
            record(AuditRecord(action: "http:\(request.method) \(request.path)", model: nil, decision: "deny", reason: "unknown endpoint"),
                   status: 404, started: started)
            return ErrorBody.response(.openai, status: 404, type: "invalid_request_error", code: "unknown_url",
                                      message: "mg-run does not proxy \(request.method) \(request.path); supported: POST /v1/chat/completions, POST /v1/responses, POST /v1/messages, POST /v1/embeddings, GET /v1/models")
        }
    }

    private func isAuthorized(_ request: HTTPRequest) -> Bool {
        var presented = request.headers["x-api-key"].map { Substring($0) }
        if let authorization = request.headers["authorization"], authorization.utf8.count > 7,
           authorization.prefix(7).lowercased() == "bearer " {
            presented = authorization.dropFirst(7).drop(while: { $0 == " " })
        }
        guard let presented else { return false }
        return constantTimeEqual(presented.utf8, configuration.token.utf8)
    }

    // MARK: - Metered calls

    private func meter(_ request: HTTPRequest, endpoint: Endpoint, started: Date) -> HTTPResponse {
        let provider = endpoint.provider
        var call: ParsedCall
        do {
            call = try ParsedCall(endpoint: endpoint, body: request.body)
            if let limit = configuration.maxContextTokens, endpoint != .embeddings {
                call = try trimContext(call, limit: limit, started: started)
            }
        } catch {
            if error.status == 403 { governor.countDenial() }
            record(AuditRecord(action: endpoint.kindAction, model: nil, decision: "deny", reason: "invalid request: \(error.message)"),
                   status: error.status, started: started)
            return ErrorBody.response(provider, status: error.status, type: error.status == 403 ? "permission_error" : "invalid_request_error",
                                      code: nil, message: error.message)
        }
        let context = callContext(request)
        applyModelFallback(&call, context: context, started: started)
        let action = call.modelAction
        // Free unknown models have no output limit either, so mg-run leaves the client's cap alone.
        let freePrice = configuration.unknownModelsFree ? ModelPrice(inputPerToken: 0, outputPerToken: 0, maxOutputTokens: 0) : nil
        guard let price = configuration.prices.price(for: call.model) ?? freePrice else {
            let message = "model '\(call.model)' has no price, so mg-run cannot bound its cost; add it under prices: in the policy, under models: in \(configuration.prices.file), or set unknown_model: allow_free"
            governor.countDenial()
            record(AuditRecord(action: action, model: call.model, decision: "deny", reason: message), status: 403, started: started)
            return ErrorBody.response(provider, status: 403, type: "permission_error", code: "model_not_priced", message: message,
                                      headers: [("x-should-retry", "false")])
        }
        guard let upstream = configuration.upstreams[provider] else {
            let message = "no \(provider.rawValue) upstream is configured for this run; start mg-run with --upstream \(provider.rawValue)=URL or set \(provider == .openai ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY")"
            record(AuditRecord(action: action, model: call.model, decision: "deny", reason: message), status: 502, started: started)
            return ErrorBody.response(provider, status: 502, type: "api_error", code: nil, message: message)
        }

        func describe(_ call: ParsedCall, price: ModelPrice) -> CallDescriptor {
            var descriptor = CallDescriptor(
                actions: call.actions, model: call.model, price: price,
                inputTokensBound: call.inputTokensBound, inputTokensEstimate: call.inputTokensEstimate,
                requestedOutputTokens: call.requestedOutput, producesOutput: endpoint != .embeddings, choices: call.choices)
            if governor.needsFingerprints {
                descriptor.fingerprint = fingerprint(request.body)
                descriptor.retryCount = request.headers["x-stainless-retry-count"].flatMap { Int($0) } ?? 0
            }
            descriptor.context = context
            descriptor.mayWriteCache = mayWriteCache
            descriptor.topic = request.headers["x-mg-topic"].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
            return descriptor
        }
        // A \u escape could spell cache_control, so it counts as a possible cache write too.
        let mayWriteCache = endpoint == .messages && (contains(request.body, "\"cache_control\"") || contains(request.body, "\\u"))
        var current = call
        var currentPrice = price
        var decision = admitOrQueue(describe(current, price: currentPrice), started: started)
        // graceful_degradation: each step moves a refused call to another model, which is decided again from scratch.
        var tried: Set<String> = [current.model]
        while case .refuse(let refusal) = decision, let kind = refusal.limitKind,
              let step = configuration.onLimitExceeded.fallbackChain.first(where: { $0.applies(to: current.modelAction, refusedBy: kind) }) {
            switch step.to {
            case .queue:
                record(AuditRecord(action: current.modelAction, model: current.model, decision: "fallback",
                                   reason: "queued by fallback_chain (\(step.from) -> queue) after: \(refusal.message)"), status: 0, started: started)
                decision = queue(describe(current, price: currentPrice), after: decision, started: started)
            case .model(let target):
                guard !tried.contains(target), let targetPrice = configuration.prices.price(for: target) else { break }
                guard Provider.canServe(endpoint, model: target) else {
                    logger.warning("fallback skipped: its model does not serve this kind of call or is served by another provider's API",
                                   [("from", current.modelAction), ("to", target)])
                    break
                }
                tried.insert(target)
                record(AuditRecord(action: current.modelAction, model: current.model, decision: "fallback",
                                   reason: "moved to llm:\(target) by fallback_chain (\(step.from), when \(step.when.rawValue)) after: \(refusal.message)"),
                       status: 0, started: started)
                current.rewriteModel(to: target)
                currentPrice = targetPrice
                decision = admitOrQueue(describe(current, price: currentPrice), started: started)
                continue
            }
            break
        }
        switch decision {
        case .refuse(let refusal):
            return refuse(refusal, call: current, started: started)
        case .admit(let admission):
            return forward(request, call: current, admission: admission, upstream: upstream, price: currentPrice, started: started)
        }
    }

    /// Returns the governor's decision. With `on_limit_exceeded: queue`, a call denied by a
    /// window that reopens waits and is decided again, until it fits or the queue timeout
    /// passes. A queued call has no reservation while it waits.
    private func admitOrQueue(_ descriptor: CallDescriptor, started: Date) -> Decision {
        let queues = configuration.onLimitExceeded.action == .queue
        let decision = governor.admit(descriptor, countsDenial: !queues)
        guard queues else { return decision }
        return queue(descriptor, after: decision, started: started)
    }

    /// Holds a call refused by a window until the window admits it or the queue timeout passes.
    private func queue(_ descriptor: CallDescriptor, after first: Decision, started: Date) -> Decision {
        var decision = first
        let deadline = started.addingTimeInterval(configuration.onLimitExceeded.queueTimeoutSeconds)
        while case .refuse(let refusal) = decision, case .window(let wait) = refusal.kind {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { break }
            usleep(useconds_t(min(wait, left) * 1_000_000))
            decision = governor.admit(descriptor, countsDenial: false)
        }
        if case .refuse = decision { governor.countDenial() }
        return decision
    }

    private func refuse(_ refusal: Refusal, call: ParsedCall, started: Date) -> HTTPResponse {
        let concludes = call.endpoint != .embeddings && (refusal.kind == .conclude
            || configuration.onLimitExceeded.action == .gracefulConclude && refusal.kind != .forbidden)
        if concludes {
            governor.recordConclusion()
            record(AuditRecord(action: call.modelAction, model: call.model, decision: "conclude", reason: refusal.message), status: 200, started: started)
            if let stopReason = refusal.stopReason, ignoresConclusions() {
                stop(stopReason, because: "the agent kept calling more than \(Int(MeteringProxy.conclusionGraceSeconds))s after its first conclusion reply")
            }
            return Conclusion.response(for: call, text: configuration.onLimitExceeded.messageToAgent)
        }
        let response = ErrorBody.refusal(refusal, provider: call.endpoint.provider)
        record(AuditRecord(action: call.modelAction, model: call.model, decision: "deny", reason: refusal.message), status: response.status, started: started)
        notify(refusal, action: call.modelAction)
        if let stopReason = refusal.stopReason {
            stop(stopReason, because: refusal.message)
        } else if configuration.onLimitExceeded.action == .kill, refusal.limitKind != nil {
            stop("on_limit_exceeded:kill", because: refusal.message)
        } else if configuration.onLimitExceeded.action == .pause, refusal.limitKind != nil {
            var seconds: Double?
            if case .window(let wait) = refusal.kind { seconds = wait }
            pause("on_limit_exceeded:pause", for: seconds)
        }
        return response
    }

    /// Shortens a call whose input is over `optimization.context_trimming.max_context_tokens`, dropping its oldest turns.
    private func trimContext(_ call: ParsedCall, limit: Int, started: Date) throws(ClientError) -> ParsedCall {
        switch try ContextTrimmer.trim(body: call.body, endpoint: call.endpoint, maxContextTokens: limit) {
        case .unchanged:
            return call
        case .trimmed(let trimmed):
            let reason = "context trimmed: \(trimmed.removedMessages) messages removed, about \(trimmed.estimatedTokensBefore) -> \(trimmed.estimatedTokensAfter) input tokens (optimization.context_trimming.max_context_tokens \(limit))"
            record(AuditRecord(action: call.modelAction, model: call.model, decision: "trim", reason: reason), status: 0, started: started)
            return try ParsedCall(endpoint: call.endpoint, body: trimmed.body)
        case .cannotFit(_, let message):
            logger.warning("context cannot be trimmed to fit; forwarding it whole", [("action", call.modelAction), ("detail", message)])
            return call
        }
    }

    /// Moves a call to a cheaper model when an `optimization.model_fallback` rule covers it and its `when` holds.
    private func applyModelFallback(_ call: inout ParsedCall, context: [String: String], started: Date) {
        guard !configuration.modelFallbacks.isEmpty else { return }
        let price = configuration.prices.price(for: call.model) ?? ModelPrice(inputPerToken: 0, outputPerToken: 0)
        var descriptor = CallDescriptor(actions: call.actions, model: call.model, price: price, inputTokensBound: call.inputTokensBound,
                                        inputTokensEstimate: call.inputTokensEstimate, requestedOutputTokens: call.requestedOutput,
                                        producesOutput: call.endpoint != .embeddings, choices: call.choices)
        descriptor.context = context
        for fallback in configuration.modelFallbacks where fallback.covers(call.actions) && fallback.to != call.model {
            if let when = fallback.when, !governor.holds(when, for: descriptor) { continue }
            guard Provider.canServe(call.endpoint, model: fallback.to) else {
                logger.warning("model fallback skipped: its model does not serve this kind of call or is served by another provider's API",
                               [("from", call.modelAction), ("to", fallback.to), ("rule", fallback.path)])
                continue
            }
            record(AuditRecord(action: call.modelAction, model: call.model, decision: "fallback",
                               reason: "moved to llm:\(fallback.to) by \(fallback.path)\(fallback.when.map { " (\($0.text))" } ?? "")"),
                   status: 0, started: started)
            call.rewriteModel(to: fallback.to)
            return
        }
    }

    /// Replaces the real keys in an upstream's body, such as an error that quotes the key it was given,
    /// with asterisks of the same length, so the agent never reads them and the JSON stays valid.
    func hidingKeys(_ body: [UInt8]) -> [UInt8] {
        var result = body
        KeyMasker.mask(&result, keys: configuration.upstreams.values.compactMap(\.apiKey).map { Array($0.utf8) }.filter { $0.count >= 8 })
        return result
    }

    /// Returns the request's `X-MG-Context-<k>` headers with the run's `--context` values over them:
    /// the operator's values win, so an agent cannot change what a condition reads from them.
    private func callContext(_ request: HTTPRequest) -> [String: String] {
        var context = configuration.context
        for (name, value) in request.headers where name.hasPrefix("x-mg-context-") && name.count > 13 {
            let key = String(name.dropFirst(13))
            if configuration.context[key] == nil { context[key] = value }
        }
        return context
    }

    /// Sends the `notify` messages of on_limit_exceeded for a limit hit, at most once a minute per limit.
    private func notify(_ refusal: Refusal, action: String) {
        guard !configuration.onLimitExceeded.notify.isEmpty, let kind = refusal.limitKind else { return }
        let now = Date()
        let due = notified.withLock { sent -> Bool in
            if let last = sent[refusal.limit], now.timeIntervalSince(last) < 60 { return false }
            sent[refusal.limit] = now
            return true
        }
        guard due else { return }
        let values = [
            "{action}": action, "{limit_type}": kind == .cost ? "cost limit \(refusal.limit)" : "rate limit \(refusal.limit)",
            "{agent_id}": configuration.agentID, "{task_id}": configuration.taskID, "{current_cost}": governor.totals.cost.description,
        ]
        for notification in configuration.onLimitExceeded.notify {
            let message = values.reduce(notification.message) { text, pair in text.replacingOccurrences(of: pair.key, with: pair.value) }
            logger.warning(message, [("action", action), ("limit", refusal.limit), ("channel", notification.channel)])
        }
    }

    /// Counts one more conclusion reply that must end the run; returns true once the agent has plainly ignored them.
    private func ignoresConclusions() -> Bool {
        conclusions.withLock { state in
            let now = Date()
            guard let first = state.first else {
                state.first = now
                return false
            }
            guard now.timeIntervalSince(first) > MeteringProxy.conclusionGraceSeconds else { return false }
            state.countedAfterGrace += 1
            return state.countedAfterGrace >= MeteringProxy.conclusionsBeforeStop
        }
    }

    /// Freezes the agent before the current response reaches it, for `seconds` or until resumed.
    func pause(_ reason: String, for seconds: Double?) {
        logger.warning("pausing the agent", [("reason", reason), ("seconds", seconds.map { String(format: "%.1f", $0) } ?? "until resumed")])
        audit?.append(AuditRecord(action: "run:pause", model: nil, decision: "pause",
                                  reason: "\(reason); \(seconds.map { "resumes in \(formatDuration($0))" } ?? "resumes with mg-run resume")"))
        onPause(reason, seconds)
    }

    func stop(_ reason: String, because detail: String) {
        logger.warning("stopping the run", [("reason", reason), ("detail", detail)])
        onStop(reason)
    }

    private func forward(_ request: HTTPRequest, call: ParsedCall, admission: Admission, upstream: Upstream, price: ModelPrice, started: Date) -> HTTPResponse {
        let body = call.upstreamBody(admission: admission)
        let transfer = UpstreamTransfer(
            pool: curl, url: upstream.baseURL + call.endpoint.upstreamPath, method: "POST",
            headers: upstreamHeaders(request, provider: call.endpoint.provider, upstream: upstream), body: body,
            timeoutSeconds: configuration.upstreamTimeoutSeconds)
        transfer.waitForStatus()

        if transfer.status == 0 || (transfer.failure != nil && transfer.status < 200) {
            transfer.close()
            governor.release(admission.id)
            let reason = "upstream \(upstream.baseURL) failed: \(transfer.failure ?? "no response")"
            logger.error("upstream request failed", [("action", call.modelAction), ("error", transfer.failure ?? "no response")])
            record(AuditRecord(action: call.modelAction, model: call.model, decision: "allow", reason: reason), status: 502, started: started)
            return ErrorBody.response(call.endpoint.provider, status: 502, type: "api_error", code: nil, message: "mg-run could not reach the upstream: \(reason)")
        }
        let headers = transfer.responseHeaders
        guard transfer.status < 400 else {
            // The provider refused the call and bills nothing for it.
            let errorBody = transfer.readAll()
            transfer.close()
            governor.release(admission.id)
            logger.warning("upstream rejected the call", [("action", call.modelAction), ("status", String(transfer.status))])
            record(AuditRecord(action: call.modelAction, model: call.model, decision: "allow", reason: "upstream answered \(transfer.status)"),
                   status: transfer.status, started: started)
            return HTTPResponse(status: transfer.status, headers: headers, body: .bytes(hidingKeys(errorBody)))
        }
        if call.stream {
            let stream = MeteredStream(proxy: self, transfer: transfer, call: call, admission: admission, price: price, started: started)
            return HTTPResponse(status: transfer.status, headers: headers, body: .stream(stream))
        }
        let responseBody = hidingKeys(transfer.readAll())
        let failure = transfer.failure
        transfer.close()
        let usage = UsageParser.usage(endpoint: call.endpoint, body: responseBody) ?? estimate(call, admission: admission)
        let (action, model, status) = (call.modelAction, call.model, transfer.status)
        let reason = failure.map { "upstream transfer failed: \($0)" } ?? "ok"
        // Settled before the response goes out, so a crash of mg-run after the client has it cannot lose the
        // settlement. The audit line is written after sending, off the latency path.
        let detailed = admission.auditLevel == .detailed
        let afterSending = settleCost(action: action, model: model, admission: admission, usage: usage, status: status, started: started,
                                      reason: reason, requestBody: detailed ? call.body : nil, responseBody: detailed ? responseBody : nil)
        return HTTPResponse(status: status, headers: headers, body: .bytes(responseBody), afterSending: afterSending)
    }

    /// Returns the reserved bound as usage, charged in full when the provider reported none.
    func estimate(_ call: ParsedCall, admission: Admission) -> Usage {
        Usage(uncachedInputTokens: call.inputTokensBound, outputTokens: (admission.outputTokens ?? 0) * call.choices, estimated: true)
    }

    func settle(action: String, model: String, admission: Admission, usage: Usage, status: Int, started: Date, reason: String,
                requestBody: [UInt8]? = nil, responseBody: [UInt8]? = nil) {
        settleCost(action: action, model: model, admission: admission, usage: usage, status: status, started: started, reason: reason,
                   requestBody: requestBody, responseBody: responseBody)()
    }

    /// Settles the call's cost now, which the ledger makes durable, and returns the audit and budget
    /// work, which may run after the response is sent.
    func settleCost(action: String, model: String, admission: Admission, usage: Usage, status: Int, started: Date, reason: String,
                    requestBody: [UInt8]? = nil, responseBody: [UInt8]? = nil) -> @Sendable () -> Void {
        let cost = governor.settle(admission.id, usage: usage)
        return { [self] in
            audit(action: action, model: model, admission: admission, usage: usage, cost: cost, status: status, started: started, reason: reason,
                  requestBody: requestBody, responseBody: responseBody)
            for event in governor.takeBudgetEvents() {
                handle(event)
            }
            checkTriggers()
        }
    }

    /// Checks the circuit breakers, emergency stops and anomaly patterns, and acts on those that tripped:
    /// each trip is logged and audited with the values that tripped it.
    public func checkTriggers() {
        for trip in governor.checkTriggers() {
            let trigger = trip.trigger
            var detail = "\(trigger.name) tripped: \(trigger.condition.text) with \(trip.values); action \(trigger.action.rawValue)"
            if !trip.effect.isEmpty { detail += ": \(trip.effect)" }
            let fields = [("trigger", trigger.name), ("values", trip.values), ("action", trigger.action.rawValue)] + (trip.effect.isEmpty ? [] : [("effect", trip.effect)])
            // A log step sets the level of the trip's log line; without one it is a warning.
            var level = Logger.Level.warning
            for case .log(let name) in trigger.steps { level = Logger.Level(name: name) ?? level }
            logger.log(level, "trigger tripped", fields)
            audit?.append(AuditRecord(action: "trigger", model: nil, decision: "trip", reason: detail))
            for step in trigger.steps {
                switch step {
                case .log:
                    break
                case .notify(let target):
                    logger.warning("trigger tripped; notifying \(target)", fields + [("channel", target)])
                case .saveState:
                    let totals = governor.totals
                    let state = "calls \(totals.calls), in flight \(totals.inFlight), \(totals.cost) USD settled, \(totals.reserved) USD reserved, "
                        + "\(totals.inputTokens) input and \(totals.outputTokens) output tokens, \(totals.denied) denied"
                    audit?.append(AuditRecord(action: "trigger", model: nil, decision: "state", reason: "\(trigger.name): \(state)"))
                }
            }
            switch trigger.action {
            case .pause, .pauseAndAlert, .pauseAgent:
                pause("trigger:\(trigger.name)", for: trigger.cooldownSeconds)
            case .kill:
                stop("trigger:\(trigger.name)", because: detail)
            case .alert, .breakLoop, .reduceRateLimit, .reduceRateLimits, .capTokens:
                // break_loop, the reductions and the token cap took effect in the governor.
                break
            }
        }
    }

    private func audit(action: String, model: String, admission: Admission, usage: Usage, cost: USD, status: Int, started: Date, reason: String,
                       requestBody: [UInt8]?, responseBody: [UInt8]?) {
        var reason = usage.estimated ? "\(reason); usage missing, charged the reserved bound" : reason
        if cost > admission.reservedCost {
            // The input bound was too low (media priced above its allowance, server-side tools), so a ceiling may be passed.
            reason += "; settled cost exceeded the reservation of \(admission.reservedCost) USD"
            logger.warning("settled cost exceeded the reservation", [("action", action), ("cost_usd", cost.description),
                                                                     ("reserved_usd", admission.reservedCost.description)])
        }
        var entry = AuditRecord(action: action, model: model, decision: "allow", reason: reason)
        entry.inputTokens = usage.inputTokens
        entry.outputTokens = usage.outputTokens
        entry.costUSD = cost.description
        entry.estimated = usage.estimated
        if admission.auditLevel == .detailed {
            entry.requestBody = requestBody.map(redactor.redact)
            entry.responseBody = responseBody.map(redactor.redact)
        }
        // audit: none keeps no line for allowed calls, unless the call cost more than it reserved.
        if admission.auditLevel != .none || cost > admission.reservedCost {
            record(entry, status: status, started: started)
        }
    }

    /// Logs and audits a budget threshold, and stops the run when the threshold's actions include kill.
    func handle(_ event: BudgetEvent) {
        let names = event.actions.map { action -> String in
            switch action {
            case .pauseNonEssential: return "pause_non_essential"
            case .notifyOps: return "notify_ops"
            case .reduceRateLimitsBy(let percent): return "reduce_rate_limits_by \(percent)"
            case .kill: return "kill"
            case .pause: return "pause"
            }
        }
        let detail = "daily budget in \(event.file) reached its \(event.level) threshold (\(event.percent)%, \(event.spent) USD spent today); actions: \(names.isEmpty ? "none" : names.joined(separator: ", "))"
        var fields: [(String, String)] = [("level", event.level), ("percent", String(event.percent)), ("spent_usd", event.spent.description)]
        fields.append(("policy", event.file))
        if event.actions.contains(.notifyOps) {
            logger.warning("budget threshold reached; notifying operators", fields)
        } else {
            logger.info("budget threshold reached", fields)
        }
        audit?.append(AuditRecord(action: "budget:\(event.level)", model: nil, decision: "alert", reason: detail))
        if event.actions.contains(.kill) {
            stop("budget:\(event.level)", because: detail)
        } else if event.actions.contains(.pause) {
            // Until the budget's day ends, when the day's spend starts again from zero.
            let now = Date().timeIntervalSince1970
            let midnight = ((now / 86_400).rounded(.down) + 1) * 86_400
            pause("budget:\(event.level)", for: midnight - now)
        }
    }

    private func upstreamHeaders(_ request: HTTPRequest, provider: Provider, upstream: Upstream) -> [(String, String)] {
        var headers = [("Content-Type", "application/json"), ("Accept", request.headers["accept"] ?? "application/json")]
        switch provider {
        case .openai:
            if let key = upstream.apiKey { headers.append(("Authorization", "Bearer \(key)")) }
            for name in ["openai-beta"] { if let value = request.headers[name] { headers.append((name, value)) } }
        case .anthropic:
            if let key = upstream.apiKey { headers.append(("x-api-key", key)) }
            headers.append(("anthropic-version", request.headers["anthropic-version"] ?? "2023-06-01"))
            if let beta = request.headers["anthropic-beta"] { headers.append(("anthropic-beta", beta)) }
        }
        return headers
    }

    func record(_ entry: AuditRecord, status: Int, started: Date) {
        var entry = entry
        // The client writes the model name and the path, so a secret may hide in them.
        entry.action = redactor.clean(entry.action)
        entry.model = entry.model.map(redactor.clean)
        entry.reason = redactor.clean(entry.reason)
        entry.status = status
        entry.latencyMilliseconds = Int(Date().timeIntervalSince(started) * 1000)
        audit?.append(entry)
    }

    // MARK: - Model list

    private func listModels(_ request: HTTPRequest, provider: Provider, started: Date) -> HTTPResponse {
        guard let upstream = configuration.upstreams[provider] else {
            return .json(200, ["object": "list", "data": [Any]()])
        }
        let transfer = UpstreamTransfer(pool: curl, url: upstream.baseURL + (provider == .openai ? "/models" : "/v1/models"), method: "GET",
                                        headers: upstreamHeaders(request, provider: provider, upstream: upstream), body: [],
                                        timeoutSeconds: 30)
        transfer.waitForStatus()
        let body = transfer.readAll()
        let status = transfer.status == 0 ? 502 : transfer.status
        transfer.close()
        record(AuditRecord(action: "llm:models", model: nil, decision: "allow", reason: "model list"), status: status, started: started)
        return HTTPResponse(status: status, headers: transfer.responseHeaders, body: .bytes(body))
    }
}

/// A streamed response on its way from the upstream to the client, settled when it ends.
final class MeteredStream: ResponseStream, @unchecked Sendable {
    // One connection thread drives next() and then finish(); nothing here is shared.
    private let proxy: MeteringProxy
    private let transfer: UpstreamTransfer
    private let call: ParsedCall
    private let admission: Admission
    private let started: Date
    private var tracker: StreamTracker
    /// Hides a real key that the upstream echoes inside the stream.
    private var masker: KeyMasker
    private var ended = false
    /// The stream as forwarded, for `audit: detailed`, up to the redactor's limit.
    private var kept: [UInt8]?
    private var settled = false

    init(proxy: MeteringProxy, transfer: UpstreamTransfer, call: ParsedCall, admission: Admission, price: ModelPrice, started: Date) {
        self.proxy = proxy
        self.transfer = transfer
        self.call = call
        self.admission = admission
        self.started = started
        self.tracker = StreamTracker(endpoint: call.endpoint, dropsUsageChunk: call.injectsUsage)
        self.masker = KeyMasker(keys: proxy.configuration.upstreams.values.compactMap(\.apiKey))
        if admission.auditLevel == .detailed { kept = [] }
    }

    func next() -> [UInt8]? {
        guard !ended else { return nil }
        guard let chunk = transfer.nextChunk() else {
            ended = true
            let rest = masker.feed(tracker.flush()) + masker.flush()
            return rest.isEmpty ? nil : rest
        }
        let forwarded = masker.feed(tracker.feed(chunk))
        if kept != nil && kept!.count <= proxy.redactor.limit { kept!.append(contentsOf: forwarded) }
        // The last event is settled before it goes out, so a crash after the client has it cannot lose the settlement.
        if tracker.finished && !settled {
            settleNow(reason: transfer.failure.map { "upstream stream failed: \($0)" } ?? "ok")
        }
        return forwarded
    }

    private func settleNow(reason: String) {
        settled = true
        let usage = tracker.usage ?? proxy.estimate(call, admission: admission)
        proxy.settle(action: call.modelAction, model: call.model, admission: admission, usage: usage, status: transfer.status, started: started, reason: reason,
                     requestBody: kept == nil ? nil : call.body, responseBody: kept)
    }

    func finish(clientGone: Bool) {
        guard !settled else {
            transfer.close()
            return
        }
        var reason = "ok"
        if clientGone && !ended {
            // The provider bills what it generates even when the client is gone,
            // so read the stream to its end to learn the real usage.
            while let chunk = transfer.nextChunk() { _ = tracker.feed(chunk) }
            reason = "client disconnected before the end of the stream"
            proxy.logger.info("client disconnected mid-stream; drained the upstream to settle", [("action", call.modelAction)])
        }
        if let failure = transfer.failure { reason = "upstream stream failed: \(failure)" }
        transfer.close()
        settleNow(reason: reason)
    }
}

/// Returns whether `bytes` contain `needle`'s UTF-8 bytes.
func contains(_ bytes: [UInt8], _ needle: String) -> Bool {
    firstIndex(of: Array(needle.utf8), in: bytes) != nil
}

/// Returns the first index at or after `start` where `pattern` begins in `bytes`, or nil when it does not occur.
func firstIndex(of pattern: [UInt8], in bytes: [UInt8], from start: Int = 0) -> Int? {
    guard let first = pattern.first, bytes.count >= pattern.count else { return nil }
    var index = start
    while index <= bytes.count - pattern.count {
        if bytes[index] == first && bytes[index..<(index + pattern.count)].elementsEqual(pattern) { return index }
        index += 1
    }
    return nil
}

/// Returns the 64-bit FNV-1a hash of a request body, which identifies a request repeated after an error.
func fingerprint(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return hash
}

/// Compares in time that depends only on the lengths, so the token cannot be guessed byte by byte.
func constantTimeEqual<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (left, right) in zip(a, b) { difference |= left ^ right }
    return difference == 0
}

/// Formats seconds for a message: "1.5s", "12m", "3h".
func formatDuration(_ seconds: Double) -> String {
    if seconds < 60 { return String(format: "%.1fs", seconds) }
    if seconds < 3_600 { return "\(Int((seconds / 60).rounded(.up)))m" }
    return "\(Int((seconds / 3_600).rounded(.up)))h"
}
