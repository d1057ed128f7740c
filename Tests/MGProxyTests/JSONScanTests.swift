import Testing
@testable import MGProxy

@Suite struct JSONScanTests {
    private func value(_ key: String, _ text: String) -> String? {
        JSONScan.topLevelValue(key, in: Array(text.utf8)).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func findsTopLevelObject() {
        #expect(value("usage", #"{"id":"x","usage":{"prompt_tokens":3,"details":{"a":1}},"z":2}"#) == #"{"prompt_tokens":3,"details":{"a":1}}"#)
    }

    @Test func findsLastMemberAndScalars() {
        #expect(value("usage", #"{"a": [1, {"usage": 5}], "usage" : {"x": "}"} }"#) == #"{"x": "}"}"#)
        #expect(value("n", #"{"n": 12, "m": true}"#) == "12")
        #expect(value("m", #"{"n": 12, "m": true}"#) == "true")
        #expect(value("s", #"{"s": "a\"b", "t": 1}"#) == #""a\"b""#)
    }

    @Test func ignoresNestedAndQuotedKeys() {
        #expect(value("usage", #"{"choices":[{"usage":{"x":1}}],"text":"\"usage\":{}"}"#) == nil)
        #expect(value("usage", #"{"inner":{"usage":{"x":1}}}"#) == nil)
        #expect(value("usage", #"{"content":"usage","x":1}"#) == nil)
    }

    @Test func malformedInputReturnsNil() {
        #expect(value("usage", "") == nil)
        #expect(value("usage", "[1,2]") == nil)
        #expect(value("usage", #"{"usage""#) == nil)
        #expect(value("usage", #"{"usage":{"a":1"#) == nil)
    }

    @Test func integerMembersWithNestedDetails() {
        let text = #"{"prompt_tokens": 12, "completion_tokens":5, "total_tokens":17, "note": "a,b}", "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 2}}"#
        let counts = JSONScan.integerMembers(in: Array(text.utf8), nested: ["prompt_tokens_details"])
        #expect(counts == ["prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                           "prompt_tokens_details.cached_tokens": 4, "prompt_tokens_details.audio_tokens": 0])
    }

    @Test func integerMembersSkipsNonIntegers() {
        let counts = JSONScan.integerMembers(in: Array(#"{"a": -3, "b": 1.5, "c": null, "d": [1, 2], "e": 7}"#.utf8))
        #expect(counts == ["a": -3, "e": 7])
    }

    @Test func usageFromResponseBody() {
        let body = Array(#"{"id":"x","choices":[{"message":{"content":"\"usage\": {\"prompt_tokens\": 999}"}}],"usage":{"prompt_tokens":10,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4}}}"#.utf8)
        let usage = UsageParser.usage(endpoint: .chatCompletions, body: body)
        #expect(usage?.uncachedInputTokens == 6)
        #expect(usage?.cacheReadTokens == 4)
        #expect(usage?.outputTokens == 3)
        let anthropic = Array(#"{"usage":{"input_tokens":25,"output_tokens":7,"cache_creation_input_tokens":3,"cache_read_input_tokens":100}}"#.utf8)
        let parsed = UsageParser.usage(endpoint: .messages, body: anthropic)
        #expect(parsed?.uncachedInputTokens == 25)
        #expect(parsed?.cacheWriteTokens == 3)
        #expect(parsed?.cacheReadTokens == 100)
        #expect(parsed?.outputTokens == 7)
    }

    @Test func oneHourCacheWritesSplitOut() {
        let body = Array(#"{"usage":{"input_tokens":5,"output_tokens":2,"cache_creation_input_tokens":300,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}}"#.utf8)
        let parsed = UsageParser.usage(endpoint: .messages, body: body)
        #expect(parsed?.cacheWriteTokens == 100)
        #expect(parsed?.cacheWrite1hTokens == 200)
        #expect(parsed?.inputTokens == 305)
    }

    @Test func oneHourWritesCappedByTotal() {
        let body = Array(#"{"usage":{"input_tokens":5,"output_tokens":2,"cache_creation_input_tokens":50,"cache_creation":{"ephemeral_1h_input_tokens":900}}}"#.utf8)
        let parsed = UsageParser.usage(endpoint: .messages, body: body)
        #expect(parsed?.cacheWriteTokens == 0)
        #expect(parsed?.cacheWrite1hTokens == 50)
    }
}

@Suite struct RedactorTests {
    @Test func knownSecretsAndShapesAreRedacted() {
        let redactor = Redactor(secrets: ["mgr-0123456789abcdef"])
        let text = redactor.redact(Array("token mgr-0123456789abcdef key sk-ant-api03-abcdefghijklmnop Authorization: Bearer abcdefghijklmnopqrstuv".utf8))
        #expect(text == "token [REDACTED] key [REDACTED] Authorization: [REDACTED]")
    }

    @Test func longBodyIsCut() {
        let text = Redactor(secrets: [], limit: 4).redact(Array("abcdefgh".utf8))
        #expect(text == "abcd…[4 more bytes not kept]")
    }

    @Test func shortSecretsAreIgnored() {
        #expect(Redactor(secrets: ["ab"]).redact(Array("abab".utf8)) == "abab")
    }
}

@Suite struct RedactorFieldTests {
    @Test func escapedKeyIsRedacted() {
        let text = Redactor(secrets: []).redact(Array(#"{"content": "sk\u002dproj-abcdefghijklmnopqrst"}"#.utf8))
        #expect(text == #"{"content": "[REDACTED]"}"#)
    }

    @Test func fieldWithTokenIsCleaned() {
        let redactor = Redactor(secrets: ["mgr-0123456789abcdef"])
        #expect(redactor.clean("llm:mgr-0123456789abcdef") == "llm:[REDACTED]")
        #expect(redactor.clean("tool:sk-proj-abcdefghijklmnopqrstu") == "tool:[REDACTED]")
    }

    @Test func cleanFieldIsKept() {
        #expect(Redactor(secrets: ["mgr-0123456789abcdef"]).clean("llm:gpt-4o") == "llm:gpt-4o")
    }

    @Test func nonASCIIEscapeIsKept() {
        #expect(Redactor.decodingASCIIEscapes(#"a\u00e9b\u0041"#) == #"a\u00e9bA"#)
    }
}

@Suite struct FallbackKindTests {
    @Test func embeddingsOnlyForEmbeddings() {
        #expect(Provider.canServe(.chatCompletions, model: "gpt-4o-mini"))
        #expect(!Provider.canServe(.chatCompletions, model: "text-embedding-3-small"))
        #expect(Provider.canServe(.embeddings, model: "text-embedding-3-small"))
        #expect(!Provider.canServe(.messages, model: "gpt-4o-mini"))
    }

    @Test func secretAcrossTheCutIsRedacted() {
        let secret = "mgr-0123456789abcdef0123"
        let text = Redactor(secrets: [secret], limit: 10).redact(Array(("12345" + secret + "tail").utf8))
        #expect(!text.contains("mgr-0123"))
        #expect(text.hasPrefix("12345[REDA"))
    }
}
