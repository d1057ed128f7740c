#ifndef MG_SPAWN_H
#define MG_SPAWN_H
#include <sys/types.h>

// The program the child runs. Every pointer is prepared by the caller before
// the clone, because the child may call only async-signal-safe functions.
struct mg_spawn_config {
    const char *_Nonnull path;              // absolute path of the program
    char *const _Nullable *_Nonnull argv;  // NULL-terminated
    char *const _Nullable *_Nonnull envp;  // NULL-terminated
    const char *_Nullable directory;        // working directory, or NULL to keep the caller's
    int new_user_namespace;                 // 1 when the caller lacks CAP_SYS_ADMIN
    int new_network_namespace;              // 1 for a network namespace with loopback only
    unsigned short listen_port;             // with a network namespace: listen on 127.0.0.1:port inside it, 0 for none
    unsigned short egress_port;             // likewise, for the egress proxy
    int cgroup_procs_fd;                    // an open cgroup.procs to move the init into before it starts the program, or -1
    int pids_procs_fd;                      // likewise, for the pids controller's cgroup of a version 1 hierarchy, or -1
    char *const _Nullable *_Nullable read_only;  // NULL-terminated paths (directories or files) mounted read-only for the program
    const int *_Nullable rlimit_resources;  // RLIMIT_* values set on the program before exec, soft and hard alike
    const unsigned long long *_Nullable rlimit_values;
    int rlimit_count;
    const void *_Nullable seccomp_program;  // a BPF program (struct sock_filter[]) installed last, or NULL
    unsigned int seccomp_program_bytes;
    int seccomp_listener;                   // 1 when the program has notify rules: its listener descriptor comes back on notify_fd
    int without_namespaces;                 // 1 to start the tree in the caller's namespaces: inside a parent run's sandbox,
                                            // or unsandboxed when asked (--no-sandbox); the program gets a process group of its own
    int read_only_root;                     // 1 to make every mount read-only, then the paths below writable
    char *const _Nullable *_Nullable writable;  // NULL-terminated host paths that stay writable with read_only_root
    char *const _Nullable *_Nullable scratch;   // NULL-terminated paths that get a fresh, private tmpfs with read_only_root
    unsigned long long scratch_bytes;       // the size of each scratch tmpfs
};

struct mg_spawn_result {
    pid_t init_pid;  // the namespace's init, as seen from the caller
    int status_fd;   // read end: 4 bytes, the program's wait status, when it ends
    int error_fd;    // read end: EOF once exec succeeded, or 8 bytes {stage, errno}
    int listen_fd;   // the listening socket inside the network namespace, or -1
    int egress_fd;   // the egress proxy's listening socket there, or -1
    int notify_fd;   // with seccomp_listener: a Unix socket that carries the seccomp listener (SCM_RIGHTS), else -1
};

// Stages reported on error_fd.
enum {
    MG_SPAWN_STAGE_FORK = 1,
    MG_SPAWN_STAGE_CHDIR = 2,
    MG_SPAWN_STAGE_EXEC = 3,
    MG_SPAWN_STAGE_PROC = 4,
    MG_SPAWN_STAGE_CAPABILITIES = 5,
    MG_SPAWN_STAGE_READ_ONLY = 6,
    MG_SPAWN_STAGE_SECCOMP = 7,
    MG_SPAWN_STAGE_RLIMITS = 8,
    MG_SPAWN_STAGE_SCRATCH = 9,
};

// Receives one descriptor sent with SCM_RIGHTS on `socket`; returns it, or -1 (EOF: the sender died first).
int mg_receive_descriptor(int socket);

// Starts a small init in new PID, mount, IPC and UTS namespaces (and a user namespace if
// asked) that mounts a /proc of its own, runs the program, forwards signals to
// it and reaps orphans. The private /proc shows only the tree's processes, so
// the program cannot read the environment of mg-run's parents. SIGKILL to
// the init kills every process in the namespace, so no descendant can outlive
// it, and the init dies with the thread that called this function
// (PR_SET_PDEATHSIG). Returns 0, or an errno value.
int mg_spawn(const struct mg_spawn_config *_Nonnull config, struct mg_spawn_result *_Nonnull result);

#endif
