import Foundation

/// The run's cgroup (version 2), for pause, resume and a kill that reaches every process.
///
/// The cgroup2 mount is read from /proc/self/mountinfo, because machines differ: a pure v2 host mounts
/// it at /sys/fs/cgroup, a hybrid one at /sys/fs/cgroup/unified. Freezing needs no controller, so it
/// works on a hybrid host whose controllers are all bound to v1.
final class ControlGroup: Sendable {
    let path: String

    /// Returns the cgroup2 mount point, or nil when there is none.
    static func mountPoint(mountInfo: String? = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) -> String? {
        for line in (mountInfo ?? "").split(separator: "\n") {
            // Fields: id parent major:minor root mount-point options ... - fstype source super-options
            let parts = line.components(separatedBy: " - ")
            guard parts.count == 2, parts[1].hasPrefix("cgroup2 ") else { continue }
            let fields = parts[0].split(separator: " ")
            if fields.count > 4 { return String(fields[4]) }
        }
        return nil
    }

    /// Creates the run's cgroup under `<cgroup2>/mg-run/`, or returns nil when cgroup2 is missing or not writable.
    static func create(runID: String) -> ControlGroup? {
        guard let mount = mountPoint() else { return nil }
        // Cgroups of runs whose mg-run was killed are left empty; rmdir removes only empty ones. A cgroup
        // created in the last minute may belong to a run that has not moved its tree in yet, so it stays.
        for stale in (try? FileManager.default.contentsOfDirectory(atPath: "\(mount)/mg-run")) ?? [] where !stale.hasPrefix("cgroup.") {
            var info = stat()
            let candidate = "\(mount)/mg-run/\(stale)"
            if stat(candidate, &info) == 0 && Double(time(nil) - info.st_ctim.tv_sec) > 60 { rmdir(candidate) }
        }
        let path = "\(mount)/mg-run/\(runID)"
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            return nil
        }
        guard FileManager.default.fileExists(atPath: path + "/cgroup.freeze") else {
            rmdir(path)
            return nil
        }
        return ControlGroup(path: path)
    }

    private init(path: String) {
        self.path = path
    }

    /// Opens `cgroup.procs` for writing, so the spawner can move the tree's init in before the program starts.
    func openProcs() -> Int32 {
        open(path + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
    }

    /// Freezes every process of the tree and returns once the kernel reports the cgroup frozen.
    func freeze(timeout: Double = 2) -> Bool {
        guard write("cgroup.freeze", "1") else { return false }
        return waitForEvent("frozen 1", timeout: timeout)
    }

    func thaw() -> Bool {
        write("cgroup.freeze", "0")
    }

    var isFrozen: Bool {
        (try? String(contentsOfFile: path + "/cgroup.events", encoding: .utf8))?.contains("frozen 1") ?? false
    }

    /// Kills every process of the tree at once, frozen or not.
    @discardableResult
    func kill() -> Bool {
        write("cgroup.kill", "1")
    }

    /// The host pids of the tree's processes.
    var processes: [Int32] {
        ((try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    /// Removes the cgroup once its processes are gone, waiting up to a second for the last to be reaped.
    func remove() {
        for _ in 0..<100 {
            if rmdir(path) == 0 || errno == ENOENT { return }
            usleep(10_000)
        }
    }

    private func write(_ file: String, _ value: String) -> Bool {
        let fd = open(path + "/" + file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return Glibc.write(fd, value, value.utf8.count) == value.utf8.count
    }

    private func waitForEvent(_ event: String, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if ((try? String(contentsOfFile: path + "/cgroup.events", encoding: .utf8)) ?? "").contains(event) { return true }
            usleep(2_000)
        }
        return false
    }
}
