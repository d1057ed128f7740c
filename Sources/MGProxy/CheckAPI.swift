import Foundation
import MGGovernor
import MGPolicy

/// The check API, for actions the proxy cannot see (`tool:<name>`, `db:write:<t>`, ...).
///
/// `POST /mg/v1/check` with `{"action", "context", "estimated_cost_usd", "tokens"}` is
/// decided by the governor as if the action were a call: it counts in every window and
/// reserves `estimated_cost_usd`. An allowed check returns a `call_id`; `POST
/// /mg/v1/report` with `{"call_id", "cost_usd", "tokens", "success"}` settles it at
/// the reported cost, or releases it when `success` is false. A check that is
/// never reported stays in flight, and counts toward max_concurrent, until the
/// run ends, when it is charged its estimate. A spent task ceiling refuses the
/// check but does not stop the run: the agent gets the refusal and decides.
extension MeteringProxy {
    static let checkPath = "/mg/v1/check"
    static let reportPath = "/mg/v1/report"

    func check(_ request: HTTPRequest, started: Date) -> HTTPResponse {
        let object: [String: Any]
        do {
            object = try checkRequestObject(request)
        } catch {
            return checkError(error.message, action: "check", started: started)
        }
        guard let given = object["action"] else {
            return checkError("missing \"action\": give the action name, such as \"db:write:users\" or \"tool:browser\"", action: "check", started: started)
        }
        guard let action = given as? String, !action.isEmpty, !action.contains("\n") else {
            return checkError("\"action\" must be a non-empty string on one line, such as \"db:write:users\"", action: "check", started: started)
        }
        var context = configuration.context
        if let given = object["context"] {
            guard let fields = given as? [String: Any] else {
                return checkError("\"context\" must be an object of names to values", action: action, started: started)
            }
            // The operator's --context values win over the agent's.
            for (key, value) in fields where configuration.context[key] == nil {
                context[key] = MeteringProxy.contextText(value)
            }
        }
        var estimate = USD.zero
        if let given = object["estimated_cost_usd"] {
            guard let dollars = dollarAmount(given) else {
                return checkError("\"estimated_cost_usd\" must be a number of dollars from 0 to 1000000, such as 0.02", action: action, started: started)
            }
            estimate = dollars
        }
        let tokens = (object["tokens"] as? Int).map { max(0, $0) } ?? 0

        // The estimate is the call's whole price, so every cost ceiling reserves it.
        var price = ModelPrice(inputPerToken: 0, outputPerToken: 0, maxOutputTokens: 0)
        price.perCall = estimate.picodollars
        var descriptor = CallDescriptor(actions: [action], model: "", price: price, inputTokensBound: tokens, inputTokensEstimate: tokens,
                                        producesOutput: false)
        descriptor.context = context
        descriptor.depth = context["depth"].flatMap { Int($0) }
        // A topic given outright wins; a search query is normalized so rephrasings share one.
        descriptor.topic = context["topic"] ?? context["query"].flatMap(CallDescriptor.normalizedTopic)
        switch governor.admit(descriptor) {
        case .refuse(let refusal):
            record(AuditRecord(action: action, model: nil, decision: "deny", reason: refusal.message), status: 200, started: started)
            var body: [String: Any] = ["allowed": false, "decision": "deny", "reason": refusal.message, "limit": refusal.limit]
            if case .window(let wait) = refusal.kind { body["retry_after_seconds"] = (wait * 1000).rounded(.up) / 1000 }
            return .json(200, body)
        case .admit(let admission):
            var parentCallID: String?
            if action.hasPrefix("delegate:"), let parent = configuration.parent {
                switch relayCheck(to: parent, action: action, context: context) {
                case .success(let id):
                    parentCallID = id
                case .failure(let refusal):
                    governor.release(admission.id)
                    record(AuditRecord(action: action, model: nil, decision: "deny", reason: refusal.reason), status: 200, started: started)
                    return .json(200, ["allowed": false, "decision": "deny", "reason": refusal.reason, "limit": "parent"])
                }
            }
            let callID = "chk-\(admission.id)"
            openChecks.withLock { $0[callID] = (admission, action, started, parentCallID) }
            record(AuditRecord(action: action, model: nil, decision: "allow", reason: "checked; waiting for its report"), status: 200, started: started)
            return .json(200, ["allowed": true, "decision": "allow", "call_id": callID,
                               "reason": "\(action) is allowed by the policy"])
        }
    }

    func report(_ request: HTTPRequest, started: Date) -> HTTPResponse {
        let object: [String: Any]
        do {
            object = try checkRequestObject(request)
        } catch {
            return checkError(error.message, action: "report", started: started)
        }
        guard let givenID = object["call_id"] else {
            return checkError("missing \"call_id\": report the call_id that POST \(MeteringProxy.checkPath) returned", action: "report", started: started)
        }
        guard let callID = givenID as? String else {
            return checkError("\"call_id\" must be the string that POST \(MeteringProxy.checkPath) returned, such as \"chk-7\"", action: "report", started: started)
        }
        var cost = USD.zero
        if let given = object["cost_usd"] {
            guard let dollars = dollarAmount(given) else {
                return checkError("\"cost_usd\" must be a number of dollars from 0 to 1000000, such as 0.02", action: "report", started: started)
            }
            cost = dollars
        }
        let tokens = (object["tokens"] as? Int).map { max(0, $0) } ?? 0
        let success = (object["success"] as? Bool) ?? true

        guard let (admission, action, _, parentCallID) = openChecks.withLock({ $0.removeValue(forKey: callID) }) else {
            return checkError("unknown call_id '\(callID)': it was never returned by a check or is already reported", action: "report", started: started)
        }
        if let parentCallID, let parent = configuration.parent {
            let answer = SupervisorClient.postJSON(url: parent.url + MeteringProxy.reportPath, token: parent.token,
                                                   object: ["call_id": parentCallID, "cost_usd": 0, "success": success])
            if answer.status != 200 {
                logger.warning("cannot relay a delegate report to the parent run", [("action", action), ("status", String(answer.status))])
            }
        }
        if !success {
            governor.release(admission.id)
            record(AuditRecord(action: action, model: nil, decision: "allow", reason: "reported failed; reservation released"), status: 200, started: started)
            return .json(200, ["recorded": true, "cost_usd": 0])
        }
        let settled = governor.settle(admission.id, cost: cost, tokens: tokens)
        if settled > admission.reservedCost {
            logger.warning("reported cost exceeded the check's estimate", [("action", action), ("cost_usd", settled.description),
                                                                         ("estimate_usd", admission.reservedCost.description)])
        }
        var entry = AuditRecord(action: action, model: nil, decision: "allow", reason: cost > admission.reservedCost
                                ? "reported; cost exceeded the estimate of \(admission.reservedCost) USD" : "reported")
        entry.inputTokens = tokens
        entry.costUSD = settled.description
        record(entry, status: 200, started: started)
        for event in governor.takeBudgetEvents() {
            handle(event)
        }
        // A report above its estimate can pass a task ceiling, which ends the run as a spent ceiling does.
        if let path = governor.passedTaskCeiling() {
            stop("cost_ceiling:max_usd_per_task", because: "\(action) reported \(settled) USD, which passed \(path)")
        }
        return .json(200, ["recorded": true, "cost_usd": Double(settled.description) ?? 0])
    }

    private struct RelayRefusal: Error {
        var reason: String
    }

    /// Asks the parent run about a sub-agent this run's policy allowed; returns the parent's call id or its reason to refuse.
    private func relayCheck(to parent: (url: String, token: String), action: String, context: [String: String]) -> Result<String, RelayRefusal> {
        let answer = SupervisorClient.postJSON(url: parent.url + MeteringProxy.checkPath, token: parent.token,
                                               object: ["action": action, "context": context])
        guard answer.status == 200, let body = answer.body else {
            return .failure(RelayRefusal(reason: "\(action) denied: the parent run did not answer the relayed check (\(answer.failure ?? "HTTP \(answer.status)"))"))
        }
        guard body["allowed"] as? Bool == true, let id = body["call_id"] as? String else {
            return .failure(RelayRefusal(reason: "\(action) denied by the parent run: \(body["reason"] as? String ?? "no reason given")"))
        }
        return .success(id)
    }

    /// Settles every check never reported at its estimate, when the run ends.
    public func closeOpenChecks() {
        let open = openChecks.withLock { checks in
            defer { checks = [:] }
            return checks
        }
        for (_, check) in open {
            let cost = governor.settle(check.admission.id, cost: check.admission.reservedCost, tokens: 0)
            var entry = AuditRecord(action: check.action, model: nil, decision: "allow", reason: "never reported; charged its estimate at the end of the run")
            entry.costUSD = cost.description
            entry.estimated = true
            record(entry, status: 200, started: check.started)
        }
    }

    private func checkRequestObject(_ request: HTTPRequest) throws(ClientError) -> [String: Any] {
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(request.body)), let object = parsed as? [String: Any] else {
            throw ClientError(status: 400, message: "the request body is not a JSON object")
        }
        return object
    }

    private func checkError(_ message: String, action: String, started: Date) -> HTTPResponse {
        record(AuditRecord(action: action, model: nil, decision: "deny", reason: "invalid request: \(message)"), status: 400, started: started)
        return .json(400, ["error": ["type": "invalid_request_error", "message": message]])
    }

    /// Returns a context value as the text `requires` and conditions compare: `true`, `3`, `verified`.
    static func contextText(_ value: Any) -> String {
        if let number = value as? NSNumber {
            if isJSONBoolean(number) { return number.boolValue ? "true" : "false" }
            return number.stringValue
        }
        if let text = value as? String { return text }
        return String(describing: value)
    }
}

/// Returns a decoded JSON number as dollars when it is from 0 to 1,000,000; nil for booleans, strings and anything out of range.
private func dollarAmount(_ value: Any) -> USD? {
    guard let number = value as? NSNumber, !isJSONBoolean(number), let dollars = USD(decimalText: number.stringValue) else { return nil }
    guard dollars >= .zero, dollars <= USD(picodollars: 1_000_000 * 1_000_000_000_000) else { return nil }
    return dollars
}

/// Tells a decoded JSON `true`/`false` from a number: on Linux both decode to NSNumber, and a boolean's type code is `c`.
func isJSONBoolean(_ number: NSNumber) -> Bool {
    String(cString: number.objCType) == "c"
}
