import Foundation
@testable import MGGovernor
import Testing
@testable import MGProxy

private func parse(_ text: String, _ endpoint: Endpoint = .chatCompletions) throws(ClientError) -> ParsedCall {
    try ParsedCall(endpoint: endpoint, body: Array(text.utf8))
}

private func object(_ bytes: [UInt8]) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:]
}

private func admission(cap: Int?, rewrites: Bool) -> Admission {
    Admission(id: 1, outputTokens: cap, rewritesOutputCap: rewrites, reservedCost: .zero)
}

@Suite struct ParsedCallTests {
    @Test func readsMeteredFields() throws {
        let call = try parse(#"{"model":"gpt-4o","n":2,"max_tokens":100,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"},{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"u"}}]}]}"#)
        #expect(call.model == "gpt-4o")
        #expect(call.choices == 2)
        #expect(call.requestedOutput == 100)
        #expect(call.outputFields == ["max_tokens"])
        #expect(call.stream)
        #expect(call.clientWantsUsage)
        #expect(!call.injectsUsage)
        #expect(call.inputTokensBound == call.body.count + 16 + 32 + ParsedCall.tokensPerMediaPart)
    }

    @Test func countsNestedMediaInToolResults() throws {
        let call = try parse(#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"image","source":{"type":"url","url":"u"}},{"type":"image","source":{"type":"url","url":"v"}}]}]}]}"#, .messages)
        // Two images, each with a nested source whose type is not text: four non-text parts.
        #expect(call.inputTokensBound == call.body.count + 8 + 32 + 4 * ParsedCall.tokensPerMediaPart)
    }

    @Test(arguments: [
        #"not json"#, #"[1,2]"#, #"{"model":"m","messages":[}"#, #"{"model":"m"} extra"#, #"{"model":"m",}"#,
    ])
    func rejectsMalformedBodies(text: String) {
        #expect(throws: ClientError.self) { try parse(text) }
    }

    @Test func rejectsBadFields() {
        #expect(throws: ClientError.self) { try parse(#"{"model":"m","messages":[],"n":0}"#) }
        #expect(throws: ClientError.self) { try parse(#"{"model":"m","messages":[],"max_tokens":-1}"#) }
        #expect(throws: ClientError.self) { try parse(#"{"model":"","messages":[]}"#) }
        #expect(throws: ClientError.self) { try parse(#"{"model":"m"}"#) }
        #expect(throws: ClientError.self) { try parse(#"{"model":"m"}"#, .embeddings) }
    }

    @Test func acceptsNullCapsAndIntegralDecimals() throws {
        #expect(try parse(#"{"model":"m","messages":[],"max_tokens":null}"#).requestedOutput == nil)
        #expect(try parse(#"{"model":"m","messages":[],"max_tokens":16.0}"#).requestedOutput == 16)
    }

    @Test func rewriteReplacesExistingCap() throws {
        let call = try parse(#"{"model":"gpt-4o", "max_tokens": 5000, "messages":[{"role":"user","content":"hi"}]}"#)
        let body = call.upstreamBody(admission: admission(cap: 700, rewrites: true))
        #expect(String(decoding: body, as: UTF8.self) == #"{"model":"gpt-4o", "max_tokens": 700, "messages":[{"role":"user","content":"hi"}]}"#)
    }

    @Test func rewriteInsertsCapAndUsage() throws {
        let call = try parse(#"{"model":"o3","stream":true,"messages":[]}"#)
        let json = object(call.upstreamBody(admission: admission(cap: 64, rewrites: true)))
        #expect(json["max_completion_tokens"] as? Int == 64)
        #expect((json["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
        #expect(json["model"] as? String == "o3")
    }

    @Test func usageAddedToExistingOptions() throws {
        let empty = try parse(#"{"model":"m","stream":true,"stream_options":{},"messages":[]}"#)
        #expect(String(decoding: empty.upstreamBody(admission: admission(cap: 1, rewrites: false)), as: UTF8.self)
                == #"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#)
        let other = try parse(#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}"#)
        let options = object(other.upstreamBody(admission: admission(cap: 1, rewrites: false)))["stream_options"] as? [String: Any]
        #expect(options?["include_usage"] as? Bool == true)
        #expect(options?["include_obfuscation"] as? Bool == false)
        let off = try parse(#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[]}"#)
        #expect(String(decoding: off.upstreamBody(admission: admission(cap: 1, rewrites: false)), as: UTF8.self)
                == #"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#)
        let null = try parse(#"{"model":"m","stream":true,"stream_options":null,"messages":[]}"#)
        #expect((object(null.upstreamBody(admission: admission(cap: 1, rewrites: false)))["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
    }

    @Test func unchangedBodyForwardedAsSent() throws {
        let text = #"{ "model" : "m", "max_tokens": 10, "messages": [ ] }"#
        let call = try parse(text)
        #expect(call.upstreamBody(admission: admission(cap: 10, rewrites: false)) == Array(text.utf8))
    }

    @Test func bothCapFieldsGetTheReservedValue() throws {
        let call = try parse(#"{"model":"gpt-4o","max_completion_tokens":10,"max_tokens":100000,"messages":[]}"#)
        #expect(call.requestedOutput == 100000)
        let json = object(call.upstreamBody(admission: admission(cap: 900, rewrites: true)))
        #expect(json["max_tokens"] as? Int == 900)
        #expect(json["max_completion_tokens"] as? Int == 900)
    }

    @Test func escapedNestedKeyNormalised() throws {
        let call = try parse(#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"typ\u0065":"image_url","image_url":{"url":"u"}}]}]}"#)
        // After normalisation the part reads as "type": one image part and its nested object.
        #expect(call.inputTokensBound >= call.body.count + 8 + 32 + ParsedCall.tokensPerMediaPart)
        #expect(!String(decoding: call.body, as: UTF8.self).contains("\\u0065"))
        let options = try parse(#"{"model":"m","stream":true,"stream_options":{"include\u005fusage":false},"messages":[]}"#)
        #expect(!options.clientWantsUsage)
        let sent = object(options.upstreamBody(admission: admission(cap: 1, rewrites: false)))
        #expect((sent["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
    }

    @Test(arguments: ["+5", "05", "1-2", "1.", ".5", "1e", "-"])
    func rejectsNonJSONNumbers(number: String) {
        #expect(throws: ClientError.self) { try parse(#"{"model":"m","messages":[],"max_tokens":"# + number + "}") }
    }

    @Test func repeatedKeysNormalisedLastWins() throws {
        let call = try parse(#"{"model":"m","max_tokens":5,"max_tokens":9000,"messages":[]}"#)
        #expect(call.requestedOutput == 9000)
        let json = object(call.upstreamBody(admission: admission(cap: 100, rewrites: true)))
        #expect(json["max_tokens"] as? Int == 100)
    }

    @Test(arguments: [#""previous_response_id":"resp_1""#, #""conversation":"conv_1""#, #""prompt":{"id":"pmpt_1"}"#])
    func storedResponsesInputRefused(field: String) {
        #expect(throws: ClientError.self) { try parse(#"{"model":"gpt-4.1","input":"hi","#+field+"}", .responses) }
    }

    @Test(arguments: [
        (Endpoint.responses, #"{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}"#),
        (.chatCompletions, #"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}"#),
        (.messages, #"{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"file","file_id":"f"}}]}]}"#),
        (.responses, #"{"model":"gpt-4.1","input":[{"type":"item_reference","id":"msg_1"}]}"#),
        (.chatCompletions, #"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"file","file":{"\u0066ile_id":"file-1"}}]}]}"#),
    ])
    func storedFilesRefused(endpoint: Endpoint, body: String) {
        #expect(throws: ClientError.self) { try parse(body, endpoint) }
    }

    @Test func inlineFileTextAccepted() throws {
        _ = try parse(#"{"model":"gpt-4o","messages":[{"role":"user","content":"the file_id field is described here"}]}"#, .chatCompletions)
    }

    @Test func nullPreviousResponseAccepted() throws {
        _ = try parse(#"{"model":"gpt-4.1","input":"hi","previous_response_id":null}"#, .responses)
    }

    @Test func responsesInputAndOutputCap() throws {
        let call = try parse(#"{"model":"gpt-4.1","max_output_tokens":5000,"input":[{"role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_image","image_url":"u"}]},{"role":"user","content":"more"}]}"#, .responses)
        #expect(call.requestedOutput == 5000)
        #expect(call.inputTokensBound == call.body.count + 16 + 32 + ParsedCall.tokensPerMediaPart)
        let json = object(call.upstreamBody(admission: admission(cap: 700, rewrites: true)))
        #expect(json["max_output_tokens"] as? Int == 700)
        let plain = try parse(#"{"model":"gpt-4.1","input":"hello"}"#, .responses)
        #expect(object(plain.upstreamBody(admission: admission(cap: 64, rewrites: true)))["max_output_tokens"] as? Int == 64)
        #expect(throws: ClientError.self) { try parse(#"{"model":"gpt-4.1"}"#, .responses) }
    }

    @Test func escapedModelDecoded() throws {
        #expect(try parse(#"{"model":"gpt-4o\u002dmini","messages":[]}"#).model == "gpt-4o-mini")
    }

    @Test func deepNestingRejected() {
        let deep = #"{"model":"m","messages":["# + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "]}"
        #expect(throws: ClientError.self) { try parse(deep) }
    }
}
