import Foundation
import MGGovernor
import MGLog
import MGPolicy

/// The agent's way to the web: an HTTP forward proxy on its loopback (HTTP_PROXY and HTTPS_PROXY).
///
/// Each request, plain HTTP or a CONNECT tunnel, is an `api:external:<host>` action (alias
/// `read:document`) decided by the governor before any byte goes out, so only hosts the policy allows are
/// reached (`request.domain in allowed_domains` in a rule's conditions). The proxy reads a tunnel's host and
/// byte counts, never its encrypted content. One thread per connection, as the LLM proxy.
public final class EgressProxy: @unchecked Sendable {
    // Threads share only the immutable fields and the governor, audit log and logger, which lock themselves.
    private let listener: Int32
    private let governor: Governor
    private let audit: AuditLog?
    private let logger: Logger
    /// `host:port` to `address:port` overrides, as curl's --resolve, for tests that serve a name locally.
    private let resolve: [String: String]

    public init(listening fd: Int32, governor: Governor, audit: AuditLog?, logger: Logger, resolve: [String: String] = [:]) {
        listener = fd
        self.governor = governor
        self.audit = audit
        self.logger = logger
        self.resolve = resolve
        let thread = Thread { [self] in
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return
                }
                let connection = Thread { [self] in serve(client) }
                connection.name = "mg-run egress connection"
                connection.start()
            }
        }
        thread.name = "mg-run egress proxy"
        thread.start()
    }

    /// Parses `MG_RUN_RESOLVE`: comma-separated `host:port:address` entries.
    public static func resolveOverrides(_ text: String?) -> [String: String] {
        var overrides: [String: String] = [:]
        for entry in (text ?? "").split(separator: ",") {
            let parts = entry.split(separator: ":", maxSplits: 2).map(String.init)
            if parts.count == 3 { overrides["\(parts[0]):\(parts[1])"] = "\(parts[2]):\(parts[1])" }
        }
        return overrides
    }

    private func serve(_ client: Int32) {
        defer { close(client) }
        var timeout = timeval(tv_sec: 600, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard let (head, rest) = readHead(client) else { return }
        let lines = head.components(separatedBy: "\r\n")
        let requestLine = lines[0].split(separator: " ").map(String.init)
        guard requestLine.count == 3 else {
            reply(client, 400, "mg-run's egress proxy expects a proxy request line such as CONNECT host:443 HTTP/1.1")
            return
        }
        let (method, target) = (requestLine[0], requestLine[1])
        let tunnel = method == "CONNECT"
        var host = ""
        var port = tunnel ? 443 : 80
        var path = "/"
        if tunnel {
            let parts = target.split(separator: ":")
            host = String(parts.first ?? "")
            if parts.count == 2, let number = Int(parts[1]) { port = number }
        } else if let url = URLComponents(string: target), url.scheme == "http", let name = url.host {
            host = name
            port = url.port ?? 80
            path = url.percentEncodedPath.isEmpty ? "/" : url.percentEncodedPath + (url.percentEncodedQuery.map { "?" + $0 } ?? "")
        } else {
            reply(client, 400, "mg-run's egress proxy forwards http:// URLs and CONNECT tunnels; got \(target)")
            return
        }
        host = host.lowercased()

        let started = Date()
        let action = "api:external:\(host)"
        var call = CallDescriptor(actions: [action, "read:document"], model: "", price: ModelPrice(inputPerToken: 0, outputPerToken: 0, maxOutputTokens: 0),
                                  inputTokensBound: 0, inputTokensEstimate: 0, producesOutput: false)
        call.domain = host
        call.path = path
        let admission: Admission
        switch governor.admit(call) {
        case .refuse(let refusal):
            audit?.append(record(action, "deny", refusal.message, status: 403, started: started))
            reply(client, 403, refusal.message)
            return
        case .admit(let admitted):
            admission = admitted
        }

        guard let upstream = connect(host: host, port: port) else {
            governor.release(admission.id)
            let message = "cannot connect to \(host):\(port)"
            audit?.append(record(action, "allow", message, status: 502, started: started))
            reply(client, 502, message)
            return
        }
        defer { close(upstream) }
        if tunnel {
            send(client, Array("HTTP/1.1 200 Connection Established\r\n\r\n".utf8))
            send(upstream, rest)
        } else {
            // The request goes on in origin form without the proxy's own headers and keep-alive. One request
            // per connection means a second request cannot reach a host the policy never checked.
            var forwarded = "\(method) \(path) \(requestLine[2])\r\n"
            for line in lines.dropFirst() where !line.isEmpty {
                let name = line.lowercased()
                if name.hasPrefix("proxy-") || name.hasPrefix("connection:") || name.hasPrefix("keep-alive:") { continue }
                forwarded += line + "\r\n"
            }
            send(upstream, Array((forwarded + "Connection: close\r\n\r\n").utf8) + rest)
        }
        let (sent, received) = relay(client, upstream, clientMaySend: tunnel)
        governor.settle(admission.id, cost: .zero, tokens: 0)
        audit?.append(record(action, "allow", "\(tunnel ? "tunnel" : method) \(host):\(port); \(sent + rest.count) bytes out, \(received) bytes in",
                             status: 200, started: started))
    }

    private func record(_ action: String, _ decision: String, _ reason: String, status: Int, started: Date) -> AuditRecord {
        var entry = AuditRecord(action: action, model: nil, decision: decision, reason: reason)
        entry.status = status
        entry.latencyMilliseconds = Int(Date().timeIntervalSince(started) * 1000)
        return entry
    }

    /// Reads up to the blank line after the headers; returns them and any bytes read past them.
    private func readHead(_ fd: Int32) -> (String, [UInt8])? {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while data.count < 16_384 {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { return nil }
            data += buffer[0..<count]
            if let end = data.indices.dropLast(3).first(where: { data[$0] == 13 && data[$0 + 1] == 10 && data[$0 + 2] == 13 && data[$0 + 3] == 10 }) {
                return (String(decoding: data[0..<end], as: UTF8.self), Array(data[(end + 4)...]))
            }
        }
        return nil
    }

    private func connect(host: String, port: Int) -> Int32? {
        var name = host
        var service = String(port)
        if let override = resolve["\(host):\(port)"], let colon = override.lastIndex(of: ":") {
            name = String(override[..<colon])
            service = String(override[override.index(after: colon)...])
        }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, service, &hints, &results) == 0, let first = results else { return nil }
        defer { freeaddrinfo(first) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            let fd = socket(current.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd >= 0 && Glibc.connect(fd, current.pointee.ai_addr, current.pointee.ai_addrlen) == 0 { return fd }
            if fd >= 0 { close(fd) }
            entry = current.pointee.ai_next
        }
        return nil
    }

    private func send(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written <= 0 { return }
            offset += written
        }
    }

    /// Copies bytes both ways until either side closes; returns the bytes sent out and received.
    /// With `clientMaySend` false (a plain HTTP request, already sent), bytes from the client are not forwarded,
    /// so a pipelined second request goes nowhere.
    private func relay(_ client: Int32, _ upstream: Int32, clientMaySend: Bool) -> (Int, Int) {
        var sent = 0
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var descriptors = [pollfd(fd: clientMaySend ? client : -1, events: Int16(POLLIN), revents: 0), pollfd(fd: upstream, events: Int16(POLLIN), revents: 0)]
        while true {
            let ready = poll(&descriptors, 2, 600_000)
            if ready <= 0 { return (sent, received) }
            for index in 0..<2 where descriptors[index].revents != 0 {
                let from = descriptors[index].fd
                let to = index == 0 ? upstream : client
                let count = read(from, &buffer, buffer.count)
                if count <= 0 { return (sent, received) }
                send(to, Array(buffer[0..<count]))
                if index == 0 { sent += count } else { received += count }
            }
        }
    }

    private func reply(_ fd: Int32, _ status: Int, _ message: String) {
        let reason = [400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"][status] ?? "Error"
        let body = message + "\n"
        send(fd, Array("HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8))
    }
}
