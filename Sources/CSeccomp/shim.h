#ifndef MG_CSECCOMP_SHIM_H
#define MG_CSECCOMP_SHIM_H

#include <errno.h>
#include <seccomp.h>
#include <linux/memfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// SCMP_ACT_ERRNO and SCMP_SYS are macros that Swift cannot import.
static inline uint32_t mg_seccomp_errno(int error) { return SCMP_ACT_ERRNO(error); }

// Adds one rule by system call name; an unknown name (older kernel headers) is skipped.
static inline int mg_seccomp_rule(scmp_filter_ctx _Nonnull context, const char *_Nonnull name, uint32_t action) {
    int number = seccomp_syscall_resolve_name(name);
    if (number == __NR_SCMP_ERROR) return 0;
    return seccomp_rule_add(context, action, number, 0);
}

// Adds a rule that applies when the system call's first argument equals `value` (prctl's option).
static inline int mg_seccomp_rule_first_argument(scmp_filter_ctx _Nonnull context, const char *_Nonnull name, uint32_t action,
                                                 uint64_t value) {
    int number = seccomp_syscall_resolve_name(name);
    if (number == __NR_SCMP_ERROR) return 0;
    return seccomp_rule_add(context, action, number, 1, SCMP_A0(SCMP_CMP_EQ, value));
}

// Adds a rule that applies when the first argument has `bit` set (clone's namespace flags).
static inline int mg_seccomp_rule_first_argument_has_bit(scmp_filter_ctx _Nonnull context, const char *_Nonnull name, uint32_t action,
                                                         uint64_t bit) {
    int number = seccomp_syscall_resolve_name(name);
    if (number == __NR_SCMP_ERROR) return 0;
    return seccomp_rule_add(context, action, number, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, bit, bit));
}

// SCMP_ACT_NOTIFY, for rules that ask the supervisor (code:execute).
static inline uint32_t mg_seccomp_notify_action(void) { return SCMP_ACT_NOTIFY; }

// Adds one rule by system call name, with at most one argument comparison: `argument` is -1 for none,
// `operation` a SCMP_CMP_* value. An unknown name (a system call newer than libseccomp) is skipped.
static inline int mg_seccomp_rule_compare(scmp_filter_ctx _Nonnull context, const char *_Nonnull name, uint32_t action,
                                          int argument, int operation, uint64_t datum_a, uint64_t datum_b) {
    int number = seccomp_syscall_resolve_name(name);
    if (number == __NR_SCMP_ERROR) return 0;
    if (argument < 0) return seccomp_rule_add(context, action, number, 0);
    struct scmp_arg_cmp comparison = {.arg = (unsigned int)argument, .op = (enum scmp_compare)operation, .datum_a = datum_a, .datum_b = datum_b};
    return seccomp_rule_add_array(context, action, number, 1, &comparison);
}

// Writes the filter's BPF program into a new memory file and returns its descriptor, or -errno.
static inline int mg_seccomp_export(scmp_filter_ctx _Nonnull context) {
    int fd = (int)syscall(SYS_memfd_create, "mg-run-seccomp", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    int error = seccomp_export_bpf(context, fd);
    if (error != 0) {
        close(fd);
        return error < 0 ? error : -error;
    }
    return fd;
}

#endif
