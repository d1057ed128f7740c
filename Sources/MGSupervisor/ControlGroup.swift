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
        firstMount(in: mountInfo) { fileSystem, _ in fileSystem == "cgroup2" }
    }

    /// Returns the first mount point of /proc/self/mountinfo whose file system type and super options
    /// (such as "pids" of a version 1 cgroup) `matches` accepts.
    static func firstMount(in mountInfo: String?, where matches: (Substring, [Substring]) -> Bool) -> String? {
        for line in (mountInfo ?? "").split(separator: "\n") {
            // Fields: id parent major:minor root mount-point options ... - fstype source super-options
            let parts = line.components(separatedBy: " - ")
            guard parts.count == 2 else { continue }
            let tail = parts[1].split(separator: " ")
            let fields = parts[0].split(separator: " ")
            guard let fileSystem = tail.first, fields.count > 4 else { continue }
            if matches(fileSystem, tail.last?.split(separator: ",") ?? []) { return String(fields[4]) }
        }
        return nil
    }

    /// Creates the run's cgroup under `<cgroup2>/mg-run/`, or returns nil when cgroup2 is missing or not writable.
    static func create(runID: String) -> ControlGroup? {
        guard let mount = mountPoint() else { return nil }
        removeStale(under: "\(mount)/mg-run")
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

    /// Removes the empty cgroups that runs killed with SIGKILL left under `directory`: rmdir removes
    /// only empty ones. A cgroup created in the last minute may belong to a run that has not moved its
    /// tree in yet, so it stays.
    static func removeStale(under directory: String) {
        let controlFiles = ["cgroup.", "notify_on_release", "release_agent", "tasks", "pids.", "memory.", "cpu"]
        for stale in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where !controlFiles.contains(where: stale.hasPrefix) {
            var info = stat()
            let candidate = "\(directory)/\(stale)"
            if stat(candidate, &info) == 0 && Double(time(nil) - info.st_ctim.tv_sec) > 60 { rmdir(candidate) }
        }
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

/// The tree's cgroup of the pids controller, which caps how many processes and threads it may have
/// (`run.sandbox.rlimits.processes`). RLIMIT_NPROC would count every process of the user on the host.
///
/// The controller is taken from the cgroup2 run group when enabled there, else from its version 1
/// hierarchy, found in /proc/self/mountinfo (hybrid hosts bind it to version 1).
final class ProcessLimitGroup: Sendable {
    let path: String
    /// Whether `path` is the run's cgroup2 group, which ControlGroup removes.
    let sharedWithRunGroup: Bool

    private init(path: String, sharedWithRunGroup: Bool) {
        self.path = path
        self.sharedWithRunGroup = sharedWithRunGroup
    }

    /// Returns the mount point of the version 1 hierarchy of the pids controller, or nil.
    static func versionOneMount(mountInfo: String? = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) -> String? {
        ControlGroup.firstMount(in: mountInfo) { fileSystem, superOptions in fileSystem == "cgroup" && superOptions.contains("pids") }
    }

    /// Creates the group with `pids.max` set to `limit`, in the run's cgroup2 group when it has the
    /// controller, else under `<pids>/mg-run/`.
    static func create(runID: String, limit: Int, runGroup: ControlGroup?) throws(SpawnError) -> ProcessLimitGroup {
        if let runGroup, FileManager.default.fileExists(atPath: runGroup.path + "/pids.max") {
            let group = ProcessLimitGroup(path: runGroup.path, sharedWithRunGroup: true)
            try group.setLimit(limit)
            return group
        }
        guard let mount = versionOneMount() else {
            throw SpawnError(description: "run.sandbox.rlimits.processes needs the cgroup pids controller, which is mounted neither in cgroup2 nor as a version 1 hierarchy; mount it, or remove the limit", exitStatus: ExitStatus.internalError)
        }
        ControlGroup.removeStale(under: "\(mount)/mg-run")
        let path = "\(mount)/mg-run/\(runID)"
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw SpawnError(description: "cannot create the pids cgroup \(path) for run.sandbox.rlimits.processes: \(error.localizedDescription); run mg-run as root", exitStatus: ExitStatus.internalError)
        }
        let group = ProcessLimitGroup(path: path, sharedWithRunGroup: false)
        do {
            try group.setLimit(limit)
        } catch {
            group.remove()
            throw error
        }
        return group
    }

    private func setLimit(_ limit: Int) throws(SpawnError) {
        let fd = open(path + "/pids.max", O_WRONLY | O_CLOEXEC)
        let text = String(limit)
        let written = fd >= 0 ? Glibc.write(fd, text, text.utf8.count) : -1
        if fd >= 0 { close(fd) }
        guard written == text.utf8.count else {
            throw SpawnError(description: "cannot set pids.max in \(path) for run.sandbox.rlimits.processes: \(String(cString: strerror(errno)))", exitStatus: ExitStatus.internalError)
        }
    }

    /// Opens `cgroup.procs` for writing, so the spawner moves the tree's init in before the program starts.
    func openProcs() -> Int32 {
        sharedWithRunGroup ? -1 : open(path + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
    }

    /// Removes the version 1 group once the tree's processes are gone, waiting up to a second.
    func remove() {
        guard !sharedWithRunGroup else { return }
        for _ in 0..<100 {
            if rmdir(path) == 0 || errno == ENOENT { return }
            usleep(10_000)
        }
    }
}
