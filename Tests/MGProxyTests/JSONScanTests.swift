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
}
