import Glibc

/// A value behind a pthread mutex, used in place of `Synchronization.Mutex` on
/// the per-call path. With one thread per connection, more threads than cores
/// contend. Mutex's spinning slow path (`_lockSlow`) then took over 20% of the
/// proxy's CPU in a 32-connection profile, while a pthread mutex sleeps.
public final class Locked<Value>: @unchecked Sendable {
    // The value is only touched between lock and unlock.
    private var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
