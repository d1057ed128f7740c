import Testing
@testable import MGProxy

private func masked(_ chunks: [String], keys: [String] = ["sk-secret-0123456789"]) -> (output: String, pieces: [String]) {
    var masker = KeyMasker(keys: keys)
    var pieces = chunks.map { String(decoding: masker.feed(Array($0.utf8)), as: UTF8.self) }
    pieces.append(String(decoding: masker.flush(), as: UTF8.self))
    return (pieces.joined(), pieces)
}

@Suite struct KeyMaskerTests {
    @Test func masksAKeyInsideOneChunk() {
        #expect(masked(["key sk-secret-0123456789 end"]).output == "key \(String(repeating: "*", count: 20)) end")
    }

    @Test(arguments: [1, 5, 10, 19])
    func masksAKeySplitAcrossChunks(at cut: Int) {
        let key = "sk-secret-0123456789"
        let text = "a \(key) b"
        let split = text.index(text.startIndex, offsetBy: 2 + cut)
        let result = masked([String(text[..<split]), String(text[split...])])
        #expect(result.output == "a \(String(repeating: "*", count: 20)) b")
        // The start of the key was held back, never sent in the clear.
        #expect(result.pieces[0] == "a ")
    }

    @Test func sendsAnEventEndAtOnce() {
        let result = masked(["data: {\"x\": 1}\n\n", "data: [DONE]\n\n"])
        #expect(result.pieces == ["data: {\"x\": 1}\n\n", "data: [DONE]\n\n", ""])
    }

    @Test func releasesAHeldPrefixThatIsNotAKey() {
        let result = masked(["ends with sk-sec", "ond thing"])
        #expect(result.pieces[0] == "ends with ")
        #expect(result.output == "ends with sk-second thing")
    }

    @Test func flushesAPrefixAtTheEndOfTheStream() {
        #expect(masked(["trailing sk-secret"]).output == "trailing sk-secret")
    }

    @Test func ignoresShortKeysAndPassesThroughWithoutKeys() {
        #expect(masked(["abc1234 x"], keys: ["abc1234"]).output == "abc1234 x")
        #expect(KeyMasker(keys: []).isEmpty)
        #expect(masked(["sk-secret-0123456789"], keys: []).output == "sk-secret-0123456789")
    }
}
