/// Admission times of one rule's calls, oldest first, for rolling windows.
/// Expired entries are dropped by moving a start index, and the storage is
/// compacted only when most of it is dead, so pruning costs O(1) amortised
/// under the governor's lock however many calls a window holds.
struct WindowLog {
    struct Entry {
        var time: Double
        var id: UInt64
    }

    private var storage: [Entry] = []
    private var start = 0

    var count: Int { storage.count - start }

    /// Returns how many entries are newer than `time`.
    func count(after time: Double) -> Int {
        storage.count - firstIndex(after: time)
    }

    /// Returns the time of the entry that must expire before `limit` calls fit in a window
    /// starting after `windowStart`: the (n - limit + 1)-th oldest of the n entries in it.
    func reopeningEntryTime(after windowStart: Double, limit: Int) -> Double {
        let first = firstIndex(after: windowStart)
        let inWindow = storage.count - first
        return storage[first + inWindow - limit].time
    }

    /// Admission times after `time`, each counting one call, to merge with other runs' calls.
    func entries(after time: Double) -> [(time: Double, amount: Int64)] {
        storage[firstIndex(after: time)...].map { ($0.time, 1) }
    }

    mutating func append(time: Double, id: UInt64) {
        storage.append(Entry(time: time, id: id))
    }

    /// Drops entries at or before `time`.
    mutating func prune(through time: Double) {
        start = firstIndex(after: time)
        if start > 1_024 && start * 2 > storage.count {
            storage.removeFirst(start)
            start = 0
        }
    }

    /// Removes a released call's entry. It was admitted recently, so the search runs from the newest end.
    mutating func remove(id: UInt64) {
        var index = storage.count - 1
        while index >= start {
            if storage[index].id == id {
                storage.remove(at: index)
                return
            }
            index -= 1
        }
    }

    private func firstIndex(after time: Double) -> Int {
        var low = start
        var high = storage.count
        while low < high {
            let middle = (low + high) / 2
            if storage[middle].time > time { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
