import CMicroHTTPD
import Foundation
import Synchronization

public struct HTTPRequest: Sendable {
    public var method: String
    /// The path without the query string, as MHD passes it.
    public var path: String
    /// Header names in lower case.
    public var headers: [String: String]
    public var body: [UInt8]

    public init(method: String, path: String, headers: [String: String] = [:], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }
}

/// A response body produced piece by piece, for server-sent events.
public protocol ResponseStream: AnyObject, Sendable {
    /// Blocks until the next bytes are ready; returns nil at the end of the stream.
    func next() -> [UInt8]?
    /// Called once when the server is done with the stream. `clientGone` is true
    /// when the client disconnected before `next()` returned nil.
    func finish(clientGone: Bool)
}

public enum HTTPBody: Sendable {
    case bytes([UInt8])
    case stream(any ResponseStream)
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: HTTPBody
    /// Work to run once the response is sent or the client is gone, off the
    /// latency path of the request. The server calls it once in either case,
    /// from MHD's completion callback or, if queueing fails, at once.
    public var afterSending: (@Sendable () -> Void)?

    public init(status: Int, headers: [(String, String)] = [], body: HTTPBody = .bytes([]), afterSending: (@Sendable () -> Void)? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
        self.afterSending = afterSending
    }

    public static func json(_ status: Int, _ object: Any, headers: [(String, String)] = []) -> HTTPResponse {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
        return HTTPResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: .bytes(Array(data)))
    }
}

public protocol HTTPHandler: Sendable {
    /// The largest request body accepted; a larger one gets `oversizedBody`'s response.
    var maxBodyBytes: Int { get }

    /// Checks a request on its headers alone, before its body is read. Returns a
    /// response to send at once, or nil to read the body and call `handle`.
    func preflight(_ request: HTTPRequest) -> HTTPResponse?

    func handle(_ request: HTTPRequest) -> HTTPResponse

    /// Returns the 413 response for a body over `maxBodyBytes`.
    func oversizedBody(_ request: HTTPRequest) -> HTTPResponse
}

extension HTTPHandler {
    public var maxBodyBytes: Int { 64 << 20 }

    public func preflight(_ request: HTTPRequest) -> HTTPResponse? { nil }

    public func oversizedBody(_ request: HTTPRequest) -> HTTPResponse {
        .json(413, ["error": ["message": "the request body is larger than \(maxBodyBytes) bytes", "type": "invalid_request_error"]])
    }
}

public struct HTTPServerError: Error, CustomStringConvertible {
    public var description: String
}

/// An HTTP/1.1 server on libmicrohttpd with one thread per connection, so a
/// handler may block while it waits for an upstream. It listens on a socket it
/// binds itself, on 127.0.0.1 by default.
public final class HTTPServer: Sendable {
    public let port: Int
    // MHD_Daemon is an opaque C pointer that MHD itself synchronises.
    private nonisolated(unsafe) let daemon: OpaquePointer
    private let handlerBox: Unmanaged<HandlerBox>

    final class HandlerBox: Sendable {
        let handler: any HTTPHandler
        init(_ handler: any HTTPHandler) { self.handler = handler }
    }

    public convenience init(host: String = "127.0.0.1", port: Int = 0, handler: any HTTPHandler) throws(HTTPServerError) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HTTPServerError(description: "cannot create a socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw HTTPServerError(description: "invalid listen address '\(host)'; use an IPv4 address such as 127.0.0.1")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 1024) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw HTTPServerError(description: "cannot listen on \(host):\(port): \(message); choose another port")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
        }
        try self.init(listening: fd, port: Int(UInt16(bigEndian: address.sin_port)), handler: handler)
    }

    /// Serves on a socket that is already listening, such as one opened inside the agent's network namespace.
    public init(listening fd: Int32, port: Int, handler: any HTTPHandler) throws(HTTPServerError) {
        self.port = port
        let box = Unmanaged.passRetained(HandlerBox(handler))
        guard let daemon = mg_mhd_start(fd, accessHandler, box.toOpaque(), requestCompleted, nil, 600) else {
            box.release()
            close(fd)
            throw HTTPServerError(description: "libmicrohttpd could not start on 127.0.0.1:\(port)")
        }
        self.daemon = daemon
        self.handlerBox = box
    }

    /// Stops accepting connections and waits for the connection threads to end.
    public func stop() {
        MHD_stop_daemon(daemon)
        handlerBox.release()
    }
}

/// The state MHD keeps between the calls of one request (`*con_cls`).
private final class RequestContext {
    var request: HTTPRequest
    var oversized = false
    var afterSending: (@Sendable () -> Void)?

    init(_ request: HTTPRequest) { self.request = request }
}

/// Pending bytes of a streamed response between calls of MHD's reader callback.
private final class StreamBox {
    let stream: any ResponseStream
    var pending: [UInt8] = []
    var offset = 0
    var ended = false

    init(_ stream: any ResponseStream) { self.stream = stream }
}

private let accessHandler: MHD_AccessHandlerCallback = { cls, connection, url, method, _, uploadData, uploadSize, contextSlot in
    guard let cls, let connection, let contextSlot, let uploadSize else { return .NO }
    let handler = Unmanaged<HTTPServer.HandlerBox>.fromOpaque(cls).takeUnretainedValue().handler

    // First call: headers only. The handler may respond before any body is read.
    guard let existing = contextSlot.pointee else {
        let request = HTTPRequest(
            method: method.map { String(cString: $0) } ?? "GET",
            path: url.map { String(cString: $0) } ?? "/",
            headers: headers(of: connection))
        if let response = handler.preflight(request) {
            return queue(response, on: connection)
        }
        let context = RequestContext(request)
        if let length = request.headers["content-length"].flatMap(Int.init), length > handler.maxBodyBytes {
            return queue(handler.oversizedBody(request), on: connection)
        }
        contextSlot.pointee = Unmanaged.passRetained(context).toOpaque()
        return .YES
    }

    let context = Unmanaged<RequestContext>.fromOpaque(existing).takeUnretainedValue()
    if uploadSize.pointee > 0 {
        // A body past the limit is read and dropped, so memory stays bounded.
        if !context.oversized, let uploadData {
            if context.request.body.count + uploadSize.pointee > handler.maxBodyBytes {
                context.oversized = true
                context.request.body = []
            } else {
                uploadData.withMemoryRebound(to: UInt8.self, capacity: uploadSize.pointee) {
                    context.request.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: uploadSize.pointee))
                }
            }
        }
        uploadSize.pointee = 0
        return .YES
    }

    if context.oversized {
        return queue(handler.oversizedBody(context.request), on: connection)
    }
    let request = context.request
    context.request.body = []
    let response = handler.handle(request)
    let result = queue(response, on: connection)
    if result == .YES {
        context.afterSending = response.afterSending
    } else {
        response.afterSending?()
    }
    return result
}

/// Returns the request headers with lower-case names.
private func headers(of connection: OpaquePointer) -> [String: String] {
    var headers: [String: String] = [:]
    withUnsafeMutablePointer(to: &headers) { pointer in
        _ = MHD_get_connection_values(connection, .HEADER_KIND, { slot, _, key, value in
            guard let slot, let key else { return .YES }
            let headers = slot.assumingMemoryBound(to: [String: String].self)
            headers.pointee[String(cString: key).lowercased()] = value.map { String(cString: $0) } ?? ""
            return .YES
        }, pointer)
    }
    return headers
}

private func queue(_ response: HTTPResponse, on connection: OpaquePointer) -> MHD_Result {
    let mhdResponse: OpaquePointer?
    switch response.body {
    case .bytes(var bytes):
        mhdResponse = bytes.withUnsafeMutableBytes {
            MHD_create_response_from_buffer($0.count, $0.baseAddress, .RESPMEM_MUST_COPY)
        }
    case .stream(let stream):
        let box = Unmanaged.passRetained(StreamBox(stream)).toOpaque()
        mhdResponse = MHD_create_response_from_callback(mg_mhd_size_unknown, 16 * 1024, streamReader, box, streamFinished)
        if mhdResponse == nil {
            Unmanaged<StreamBox>.fromOpaque(box).release()
            stream.finish(clientGone: true)
        }
    }
    guard let mhdResponse else { return .NO }
    for (name, value) in response.headers {
        _ = MHD_add_response_header(mhdResponse, name, value)
    }
    let result = MHD_queue_response(connection, UInt32(response.status), mhdResponse)
    MHD_destroy_response(mhdResponse)
    return result
}

private let streamReader: MHD_ContentReaderCallback = { cls, _, buffer, max in
    guard let cls, let buffer else { return mg_mhd_end_with_error }
    let box = Unmanaged<StreamBox>.fromOpaque(cls).takeUnretainedValue()
    while box.offset >= box.pending.count {
        guard let next = box.stream.next() else {
            box.ended = true
            return mg_mhd_end_of_stream
        }
        box.pending = next
        box.offset = 0
    }
    let count = min(max, box.pending.count - box.offset)
    box.pending.withUnsafeBytes { source in
        UnsafeMutableRawPointer(buffer).copyMemory(from: source.baseAddress! + box.offset, byteCount: count)
    }
    box.offset += count
    return count
}

private let streamFinished: MHD_ContentReaderFreeCallback = { cls in
    guard let cls else { return }
    let box = Unmanaged<StreamBox>.fromOpaque(cls).takeRetainedValue()
    box.stream.finish(clientGone: !box.ended)
}

private let requestCompleted: MHD_RequestCompletedCallback = { _, _, contextSlot, _ in
    guard let contextSlot, let pointer = contextSlot.pointee else { return }
    let context = Unmanaged<RequestContext>.fromOpaque(pointer).takeRetainedValue()
    contextSlot.pointee = nil
    context.afterSending?()
}
