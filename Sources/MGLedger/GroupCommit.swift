import Glibc

/// Runs writes in shared transactions: a caller that finds no transaction
/// running starts one and commits every write queued by then, while the
/// others wait for that commit. Every write is committed before its caller
/// returns, so nothing is lost in a crash, yet under concurrent calls one
/// transaction (and its locks and WAL append) serves many of them.
final class GroupCommit: @unchecked Sendable {
    // `queue` and `committing` are only touched under `mutex`.
    final class Job {
        let work: () throws(LedgerError) -> Void
        var done = false
        var failure: LedgerError?

        init(_ work: @escaping () throws(LedgerError) -> Void) {
            self.work = work
        }
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [Job] = []
    private var committing = false
    /// Runs a batch: begins a transaction, runs each job's work, commits. Called by one thread at a time.
    private let transaction: ([Job]) -> Void

    init(transaction: @escaping ([Job]) -> Void) {
        self.transaction = transaction
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Runs `work` inside a transaction shared with concurrent callers and returns once it is committed.
    func run(_ work: () throws(LedgerError) -> Void) throws(LedgerError) {
        let failure: LedgerError? = withoutActuallyEscaping(work) { escapable in
            let job = Job(escapable)
            pthread_mutex_lock(mutex)
            queue.append(job)
            while !job.done {
                if committing {
                    pthread_cond_wait(condition, mutex)
                    continue
                }
                committing = true
                let batch = queue
                queue = []
                pthread_mutex_unlock(mutex)
                transaction(batch)
                pthread_mutex_lock(mutex)
                for finished in batch { finished.done = true }
                committing = false
                pthread_cond_broadcast(condition)
            }
            pthread_mutex_unlock(mutex)
            return job.failure
        }
        if let failure { throw failure }
    }
}
