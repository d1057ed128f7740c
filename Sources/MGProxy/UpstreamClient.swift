import CCurl
import Foundation
import MGGovernor

/// One HTTP exchange with an upstream provider over libcurl, read at the
/// caller's pace: `start` sends the request, `waitForStatus` returns once the
/// response headers are in, and `nextChunk` hands over body bytes as they
/// arrive. Not thread-safe: one connection thread drives it from start to end.
final class UpstreamTransfer {
    private let pair: CurlPair
    private let pool: CurlPool
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var finished = false

    /// Response headers worth passing on to the client; the rest are dropped as they arrive.
    static let keptHeaders: Set<String> = ["content-type", "x-request-id", "request-id", "openai-processing-ms", "retry-after", "retry-after-ms", "x-should-retry"]

    fileprivate(set) var status = 0
    fileprivate(set) var responseHeaders: [(String, String)] = []
    fileprivate var headersComplete = false
    fileprivate var buffer: [UInt8] = []
    private(set) var failure: String?

    init(pool: CurlPool, url: String, method: String, headers: [(String, String)], body: [UInt8], timeoutSeconds: Int) {
        self.pool = pool
        self.pair = pool.take()
        let easy = pair.easy
        curl_easy_reset(easy)
        _ = mg_curl_setopt_string(easy, CURLOPT_URL, url)
        _ = mg_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = mg_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT, 10)
        _ = mg_curl_setopt_long(easy, CURLOPT_TIMEOUT, timeoutSeconds)
        _ = mg_curl_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        for (name, value) in headers + [("Expect", "")] {
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        _ = mg_curl_setopt_slist(easy, CURLOPT_HTTPHEADER, headerList)
        if method == "POST" {
            _ = mg_curl_setopt_long(easy, CURLOPT_POSTFIELDSIZE, body.count)
            body.withUnsafeBytes { _ = mg_curl_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: $0.baseAddress)) }
        } else {
            _ = mg_curl_setopt_long(easy, CURLOPT_HTTPGET, 1)
        }
        let context = Unmanaged.passUnretained(self).toOpaque()
        _ = mg_curl_setopt_data_callback(easy, CURLOPT_WRITEFUNCTION, writeCallback)
        _ = mg_curl_setopt_pointer(easy, CURLOPT_WRITEDATA, context)
        _ = mg_curl_setopt_data_callback(easy, CURLOPT_HEADERFUNCTION, headerCallback)
        _ = mg_curl_setopt_pointer(easy, CURLOPT_HEADERDATA, context)
        curl_multi_add_handle(pair.multi, easy)
    }

    deinit {
        close()
    }

    /// Drives the transfer until the response status and headers are known or it fails.
    func waitForStatus() {
        while !headersComplete && !finished {
            pump()
        }
    }

    /// Blocks until body bytes arrive; returns nil once the body is complete or the transfer failed.
    func nextChunk() -> [UInt8]? {
        while buffer.isEmpty && !finished {
            pump()
        }
        if buffer.isEmpty { return nil }
        defer { buffer.removeAll(keepingCapacity: true) }
        return buffer
    }

    func readAll() -> [UInt8] {
        var body: [UInt8] = []
        while let chunk = nextChunk() { body += chunk }
        return body
    }

    /// Ends the transfer early (or after it completed) and returns the handles to the pool.
    func close() {
        guard !returned else { return }
        returned = true
        curl_multi_remove_handle(pair.multi, pair.easy)
        if let headerList { curl_slist_free_all(headerList) }
        headerList = nil
        pool.give(pair)
    }

    private var returned = false

    private func pump() {
        var running: Int32 = 0
        var code = curl_multi_perform(pair.multi, &running)
        if code == CURLM_OK && running > 0 && buffer.isEmpty {
            var ready: Int32 = 0
            code = curl_multi_poll(pair.multi, nil, 0, 1000, &ready)
            _ = curl_multi_perform(pair.multi, &running)
        }
        if code != CURLM_OK {
            failure = String(cString: curl_multi_strerror(code))
            finished = true
            return
        }
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(pair.multi, &remaining) {
            if message.pointee.msg == CURLMSG_DONE {
                let result = message.pointee.data.result
                if result != CURLE_OK {
                    failure = String(cString: curl_easy_strerror(result))
                }
                finished = true
            }
        }
        if running == 0 { finished = true }
        if finished && status == 0 {
            var code: Int = 0
            _ = mg_curl_getinfo_long(pair.easy, CURLINFO_RESPONSE_CODE, &code)
            status = code
        }
    }
}

private let writeCallback: mg_curl_data_callback = { data, size, count, context in
    guard let context else { return 0 }
    let transfer = Unmanaged<UpstreamTransfer>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    data.withMemoryRebound(to: UInt8.self, capacity: length) {
        transfer.buffer.append(contentsOf: UnsafeBufferPointer(start: $0, count: length))
    }
    transfer.headersComplete = true
    return length
}

private let headerCallback: mg_curl_data_callback = { data, size, count, context in
    guard let context else { return 0 }
    let transfer = Unmanaged<UpstreamTransfer>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    let line = UnsafeRawBufferPointer(start: data, count: length)
    // Parsed as bytes: this runs for every header line of every call.
    var end = line.count
    while end > 0 && (line[end - 1] == 0x0A || line[end - 1] == 0x0D || line[end - 1] == 0x20) { end -= 1 }
    let content = UnsafeRawBufferPointer(rebasing: line[0..<end])
    if content.starts(with: "HTTP/".utf8) {
        // A new header block: after "100 Continue" or a redirect, the last block wins.
        var status = 0
        var index = content.firstIndex(of: 0x20).map { $0 + 1 } ?? content.count
        while index < content.count, content[index] >= 0x30, content[index] <= 0x39 {
            status = status * 10 + Int(content[index] - 0x30)
            index += 1
        }
        transfer.status = status
        transfer.responseHeaders = []
    } else if content.isEmpty {
        if transfer.status >= 200 { transfer.headersComplete = true }
    } else if let colon = content.firstIndex(of: UInt8(ascii: ":")) {
        let name = String(decoding: content[0..<colon], as: UTF8.self).lowercased()
        guard UpstreamTransfer.keptHeaders.contains(name) else { return length }
        var valueStart = colon + 1
        while valueStart < content.count && content[valueStart] == 0x20 { valueStart += 1 }
        transfer.responseHeaders.append((name, String(decoding: content[valueStart..<content.count], as: UTF8.self)))
    }
    return length
}

/// A curl multi handle with its easy handle. Reusing the pair keeps the
/// upstream connection alive between calls, because a multi handle owns the
/// connection cache of the transfers it runs.
final class CurlPair {
    let multi: UnsafeMutableRawPointer
    let easy: UnsafeMutableRawPointer

    init() {
        // Both return NULL only when memory is exhausted.
        multi = curl_multi_init()!
        easy = curl_easy_init()!
    }
}

/// Idle curl handle pairs, shared by all connection threads.
final class CurlPool: Sendable {
    // The pairs are used by one thread at a time: taken out under the lock, given back under it.
    private let idle = Locked<[CurlPair]>([])
    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    init() {
        _ = CurlPool.globalInit
    }

    func take() -> CurlPair {
        idle.withLock { $0.popLast() } ?? CurlPair()
    }

    func give(_ pair: CurlPair) {
        idle.withLock { pairs in
            if pairs.count < 256 { pairs.append(pair) }
        }
    }
}

extension CurlPair: @unchecked Sendable {}  // used by one thread at a time, handed over through CurlPool's lock

/// A blocking JSON POST for mg-run's own requests, such as a nested run's check with its parent.
public enum SupervisorClient {
    private static let pool = CurlPool()

    /// Posts `object` as JSON with a bearer token and returns the status and the decoded object.
    /// When the server cannot be reached, the object is nil and the result carries the transfer's error text.
    public static func postJSON(url: String, token: String, object: [String: Any], timeoutSeconds: Int = 10)
        -> (status: Int, body: [String: Any]?, failure: String?) {
        let body = (try? JSONSerialization.data(withJSONObject: object)).map(Array.init) ?? []
        let transfer = UpstreamTransfer(pool: pool, url: url, method: "POST",
                                        headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
                                        body: body, timeoutSeconds: timeoutSeconds)
        transfer.waitForStatus()
        let bytes = transfer.readAll()
        let failure = transfer.failure
        let status = transfer.status
        transfer.close()
        let decoded = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
        return (status, decoded, status == 0 ? failure ?? "no response" : nil)
    }
}
