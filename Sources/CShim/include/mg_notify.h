#ifndef MG_NOTIFY_H
#define MG_NOTIFY_H
#include <stdint.h>
#include <sys/types.h>

// One seccomp user notification: a system call of the tree waiting for mg-run's decision.
struct mg_notification {
    uint64_t id;
    pid_t pid;            // the calling thread, in mg-run's PID namespace
    int system_call;      // its number (x86-64)
    uint64_t arguments[6];
};

// Waits up to `timeout_ms` for a notification on `listener`. Returns 1 with `notification` filled,
// 0 on timeout, -1 when no process uses the filter any more (or on an error, with errno).
int mg_notify_receive(int listener, int timeout_ms, struct mg_notification *_Nonnull notification);

// Returns 1 while the notification's system call still waits (its thread did not die or get
// interrupted), so what was read from its memory belongs to it.
int mg_notify_valid(int listener, uint64_t id);

// Responds to a notification: error 0 lets the system call run, otherwise it fails with that errno.
// Returns 0, or -1 with errno (ENOENT: the caller is gone).
int mg_notify_respond(int listener, uint64_t id, int error);

// The x86-64 numbers of execve and execveat.
int mg_system_call_execve(void);
int mg_system_call_execveat(void);

#endif
