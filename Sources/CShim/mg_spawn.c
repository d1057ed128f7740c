#define _GNU_SOURCE
#include "mg_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct init_arguments {
    const struct mg_spawn_config *config;
    int sync_read;   // parent writes one byte once the namespace maps are set
    int sync_write;
    int status_read;
    int status_write;
    int error_read;
    int error_write;
    int notify_write;  // with a seccomp listener: where the program sends it, else -1
    sigset_t original_mask;
    // Set when the clone had no namespaces: a sub-agent inside its parent's sandbox, or a run without a
    // sandbox. The program then runs in a process group of its own.
    int without_namespaces;
};

static void write_all(int fd, const void *data, size_t length) {
    const char *bytes = data;
    while (length > 0) {
        ssize_t written = write(fd, bytes, length);
        if (written < 0 && errno == EINTR) continue;
        if (written <= 0) return;
        bytes += written;
        length -= (size_t)written;
    }
}

static void report_error(int fd, int32_t stage, int32_t error) {
    int32_t message[2] = {stage, error};
    write_all(fd, message, sizeof message);
}

// Closes every descriptor from `first` up except the `count` ones in `keep` (ascending, -1 entries ignored).
static void close_descriptors_except(int first, const int *keep, int count) {
    int from = first;
    for (int index = 0; index < count; index++) {
        if (keep[index] < from) continue;
        if (keep[index] > from) syscall(SYS_close_range, from, keep[index] - 1, 0);
        from = keep[index] + 1;
    }
    if (syscall(SYS_close_range, from, ~0U, 0) == 0) return;
    // close_range arrived in Linux 5.9; older kernels get the loop.
    long max = sysconf(_SC_OPEN_MAX);
    for (int fd = first; fd < max; fd++) {
        int kept = 0;
        for (int index = 0; index < count; index++) kept |= keep[index] == fd;
        if (!kept) close(fd);
    }
}

// Sends `fd` over the Unix socket `socket` with SCM_RIGHTS; returns 0 or -1.
static int send_descriptor(int socket, int fd) {
    char byte = 0;
    struct iovec vector = {.iov_base = &byte, .iov_len = 1};
    union {
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof control.buffer};
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &fd, sizeof fd);
    ssize_t sent;
    do {
        sent = sendmsg(socket, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent == 1 ? 0 : -1;
}

int mg_receive_descriptor(int socket) {
    char byte;
    struct iovec vector = {.iov_base = &byte, .iov_len = 1};
    union {
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof control.buffer};
    ssize_t got;
    do {
        got = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    } while (got < 0 && errno == EINTR);
    if (got != 1) return -1;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (header == NULL || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(header), sizeof fd);
    return fd;
}

// Host-wide kernel settings a root agent could otherwise write: a core_pattern or modprobe path in
// /proc/sys, or uevent_helper in /sys, makes the kernel run a program as root outside every namespace.
static const char *const read_only_paths[] = {
    "/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/sys",
};

// Bind-mounts each path onto itself read-only; a path that does not exist is skipped.
static int make_read_only(void) {
    for (size_t index = 0; index < sizeof read_only_paths / sizeof read_only_paths[0]; index++) {
        const char *path = read_only_paths[index];
        if (access(path, F_OK) != 0) continue;
        if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) return -1;
        if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) return -1;
    }
    return 0;
}

// Bind-mounts one path onto itself read-only; a path that does not exist is skipped.
static int bind_read_only(const char *path) {
    if (access(path, F_OK) != 0) return 0;
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) return -1;
    return mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
}

// Remounts read-only every mount under `prefix` (such as the cgroup file systems under /sys/), which a
// recursive bind keeps writable. Reads /proc/self/mountinfo into a fixed buffer: no malloc in the init.
static int remount_below_read_only(const char *prefix) {
    static char buffer[256 * 1024];
    int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t length = 0;
    ssize_t got;
    while (length < sizeof buffer - 1 && (got = read(fd, buffer + length, sizeof buffer - 1 - length)) > 0) length += (size_t)got;
    close(fd);
    buffer[length] = 0;
    size_t prefix_length = strlen(prefix);
    char *line = buffer;
    while (*line) {
        char *end = strchr(line, '\n');
        if (end) *end = 0;
        // The fifth field is the mount point.
        char *field = line;
        for (int index = 0; index < 4 && field; index++) {
            field = strchr(field, ' ');
            if (field) field++;
        }
        if (field) {
            char *space = strchr(field, ' ');
            if (space) *space = 0;
            if (strncmp(field, prefix, prefix_length) == 0 &&
                mount(NULL, field, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 &&
                errno != EINVAL) {
                return -1;
            }
        }
        if (!end) break;
        line = end + 1;
    }
    return 0;
}

// Makes every mount read-only at once (mount_setattr with AT_RECURSIVE, Linux 5.12). Then each
// `writable` path is bind-mounted onto itself writable, and each `scratch` path gets a fresh tmpfs of
// config->scratch_bytes; a scratch tmpfs also hides the host's Unix sockets under it.
static int make_root_read_only(const struct mg_spawn_config *config) {
    struct {
        unsigned long long set, clear, propagation, userns;
    } attributes = {.set = 0x00000001 /* MOUNT_ATTR_RDONLY */ | 0x00000002 /* MOUNT_ATTR_NOSUID */};
    if (syscall(442 /* SYS_mount_setattr */, AT_FDCWD, "/", 0x8000 /* AT_RECURSIVE */, &attributes, sizeof attributes) != 0) return -1;
    if (config->writable != NULL) {
        for (char *const *path = config->writable; *path != NULL; path++) {
            if (mount(*path, *path, NULL, MS_BIND | MS_REC, NULL) != 0) return -1;
            if (mount(NULL, *path, NULL, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV, NULL) != 0) return -1;
        }
    }
    if (config->scratch != NULL) {
        char options[64];
        snprintf(options, sizeof options, "mode=1777,size=%llu", config->scratch_bytes);
        for (char *const *path = config->scratch; *path != NULL; path++) {
            if (access(*path, F_OK) != 0) continue;
            if (mount("tmpfs", *path, "tmpfs", MS_NOSUID | MS_NODEV, options) != 0) return -1;
        }
    }
    return 0;
}

// Capabilities the program never gets, even as root: with them it could unmount its private /proc and
// read the host's, trace or signal processes outside, load modules, or open files by handle past its mounts.
static const int dropped_capabilities[] = {
    CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_BOOT, CAP_DAC_READ_SEARCH,
    CAP_NET_ADMIN, CAP_SYS_TIME, CAP_MAC_ADMIN, CAP_MAC_OVERRIDE, CAP_SYSLOG, CAP_MKNOD, CAP_AUDIT_CONTROL,
    CAP_LINUX_IMMUTABLE, CAP_SYS_PACCT, CAP_SYS_TTY_CONFIG, CAP_SYS_RESOURCE, CAP_SETPCAP, CAP_SYS_CHROOT,
    38 /* CAP_PERFMON */, 39 /* CAP_BPF */, 40 /* CAP_CHECKPOINT_RESTORE */,
};

// Removes the dropped capabilities from the bounding set, so the program cannot hold them after exec.
// An unknown capability number (an older kernel) is skipped.
static int drop_capabilities(void) {
    for (size_t index = 0; index < sizeof dropped_capabilities / sizeof dropped_capabilities[0]; index++) {
        if (prctl(PR_CAPBSET_DROP, dropped_capabilities[index], 0, 0, 0) != 0 && errno != EINVAL) return -1;
    }
    return 0;
}

// Runs in the program's process: restores what the init changed, then execs.
static void exec_program(const struct init_arguments *arguments) {
    const struct mg_spawn_config *config = arguments->config;
    struct sigaction default_action;
    memset(&default_action, 0, sizeof default_action);
    default_action.sa_handler = SIG_DFL;
    for (int signal_number = 1; signal_number < NSIG; signal_number++) {
        if (signal_number == SIGKILL || signal_number == SIGSTOP) continue;
        sigaction(signal_number, &default_action, NULL);  // ignored dispositions survive exec
    }
    sigprocmask(SIG_SETMASK, &arguments->original_mask, NULL);
    if (config->directory != NULL && chdir(config->directory) != 0) {
        report_error(arguments->error_write, MG_SPAWN_STAGE_CHDIR, errno);
        _exit(127);
    }
    int keep[2] = {arguments->error_write, arguments->notify_write};
    if (keep[1] >= 0 && keep[1] < keep[0]) {
        keep[1] = keep[0];
        keep[0] = arguments->notify_write;
    }
    close_descriptors_except(3, keep, keep[1] >= 0 && keep[0] >= 0 ? 2 : 1);
    for (int index = 0; index < config->rlimit_count; index++) {
        struct rlimit limit = {.rlim_cur = config->rlimit_values[index], .rlim_max = config->rlimit_values[index]};
        if (setrlimit(config->rlimit_resources[index], &limit) != 0) {
            report_error(arguments->error_write, MG_SPAWN_STAGE_RLIMITS, errno);
            _exit(127);
        }
    }
    if (arguments->without_namespaces) {
        // Not PID 1's child in a namespace of its own: it dies with the init, and signals reach its group.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setpgid(0, 0);
    }
    // Without CAP_SETPCAP (inside a parent's sandbox) the capabilities are already gone from the bounding set.
    if (drop_capabilities() != 0 && !(arguments->without_namespaces && errno == EPERM)) {
        report_error(arguments->error_write, MG_SPAWN_STAGE_CAPABILITIES, errno);
        _exit(127);
    }
    // No new privileges, then the filter, last: nothing after it needs a denied system call but execve.
    if (config->seccomp_program != NULL) {
        struct sock_fprog program = {
            .len = (unsigned short)(config->seccomp_program_bytes / sizeof(struct sock_filter)),
            .filter = (struct sock_filter *)config->seccomp_program,
        };
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
            report_error(arguments->error_write, MG_SPAWN_STAGE_SECCOMP, errno);
            _exit(127);
        }
        if (config->seccomp_listener) {
            // The supervisor decides on this process's own execve below, then on every later one it is notified of.
            int listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &program);
            if (listener < 0 || send_descriptor(arguments->notify_write, listener) != 0) {
                report_error(arguments->error_write, MG_SPAWN_STAGE_SECCOMP, errno);
                _exit(127);
            }
            close(listener);
            close(arguments->notify_write);
        } else if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
            report_error(arguments->error_write, MG_SPAWN_STAGE_SECCOMP, errno);
            _exit(127);
        }
    }
    execve(config->path, config->argv, config->envp);
    report_error(arguments->error_write, MG_SPAWN_STAGE_EXEC, errno);
    _exit(127);
}

// The namespace's PID 1. A PID 1 ignores every signal it has no handler for,
// so it blocks them all and forwards the ones a supervisor sends.
static int init_main(void *opaque) {
    struct init_arguments *arguments = opaque;
    close(arguments->sync_write);
    close(arguments->status_read);
    close(arguments->error_read);
    prctl(PR_SET_PDEATHSIG, SIGKILL);

    // EOF here means the supervisor died before the death signal was armed.
    char byte;
    ssize_t got;
    do {
        got = read(arguments->sync_read, &byte, 1);
    } while (got < 0 && errno == EINTR);
    if (got != 1) _exit(1);
    close(arguments->sync_read);

    // Private propagation first, so the new /proc is not mounted on the host too. Without namespaces (inside
    // a parent run's sandbox, or unsandboxed when asked) the mounts stay as they are.
    int nested = arguments->without_namespaces;
    if (!nested && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        report_error(arguments->error_write, MG_SPAWN_STAGE_PROC, errno);
        _exit(1);
    }
    if (!nested && mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) {
        report_error(arguments->error_write, MG_SPAWN_STAGE_PROC, errno);
        _exit(1);
    }
    // Unix sockets of the host's services (/run/docker.sock, D-Bus) are files, not in the network
    // namespace, so an empty /run hides them from a program that may reach only the proxy.
    if (!nested && arguments->config->new_network_namespace && access("/run", F_OK) == 0 &&
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0) {
        report_error(arguments->error_write, MG_SPAWN_STAGE_READ_ONLY, errno);
        _exit(1);
    }
    int read_only_failed = 0;
    if (!nested && arguments->config->read_only != NULL) {
        for (char *const *path = arguments->config->read_only; *path != NULL; path++) {
            if (bind_read_only(*path) != 0) read_only_failed = 1;
        }
    }
    // The cgroup file systems under /sys stay writable after the bind above unless remounted one by one.
    if (!nested && (read_only_failed || make_read_only() != 0 || remount_below_read_only("/sys/") != 0)) {
        report_error(arguments->error_write, MG_SPAWN_STAGE_READ_ONLY, errno);
        _exit(1);
    }
    if (!nested && arguments->config->read_only_root && make_root_read_only(arguments->config) != 0) {
        report_error(arguments->error_write, MG_SPAWN_STAGE_SCRATCH, errno);
        _exit(1);
    }
    // Without a PID namespace, orphans of the tree come back to this init, which reaps them.
    if (nested) prctl(PR_SET_CHILD_SUBREAPER, 1);

    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);

    // The raw system call: glibc's fork() would take malloc locks that another
    // thread of the supervisor may have held at the moment of the clone.
    pid_t program = (pid_t)syscall(SYS_fork);
    if (program < 0) {
        report_error(arguments->error_write, MG_SPAWN_STAGE_FORK, errno);
        _exit(1);
    }
    if (program == 0) exec_program(arguments);
    close(arguments->error_write);

    for (;;) {
        siginfo_t info;
        int signal_number = sigwaitinfo(&all, &info);
        if (signal_number < 0) continue;
        if (signal_number == SIGCHLD) {
            for (;;) {
                int status = 0;
                pid_t reaped = waitpid(-1, &status, WNOHANG);
                if (reaped <= 0) break;
                if (reaped == program) {
                    int32_t reported = status;
                    write_all(arguments->status_write, &reported, sizeof reported);
                    // Exiting as PID 1 makes the kernel kill what the program left behind; without a
                    // namespace, the program's process group is killed instead.
                    if (arguments->without_namespaces) kill(-program, SIGKILL);
                    _exit(0);
                }
            }
        } else if (signal_number == SIGTERM) {
            // Every process of the namespace but this one, or without one the program's process group.
            kill(arguments->without_namespaces ? -program : -1, SIGTERM);
        } else if (signal_number == SIGINT || signal_number == SIGHUP || signal_number == SIGQUIT ||
                   signal_number == SIGUSR1 || signal_number == SIGUSR2 || signal_number == SIGWINCH ||
                   signal_number == SIGCONT) {
            kill(program, signal_number);
        }
    }
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    ssize_t length = (ssize_t)strlen(text);
    int error = write(fd, text, (size_t)length) == length ? 0 : errno;
    close(fd);
    return error;
}

static int map_identity(pid_t pid) {
    char path[64];
    char line[64];
    snprintf(path, sizeof path, "/proc/%d/setgroups", (int)pid);
    int error = write_file(path, "deny");
    if (error != 0 && error != ENOENT) return error;
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    snprintf(line, sizeof line, "%u %u 1\n", (unsigned)getuid(), (unsigned)getuid());
    if ((error = write_file(path, line)) != 0) return error;
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    snprintf(line, sizeof line, "%u %u 1\n", (unsigned)getgid(), (unsigned)getgid());
    return write_file(path, line);
}

struct listen_request {
    pid_t pid;
    unsigned short ports[2];  // the proxy's and the egress proxy's; 0 for none
    int fds[2];
    int error;
};

// Opens a listening TCP socket on 127.0.0.1:port in the calling thread's network namespace; -1 with errno on failure.
static int open_listener(unsigned short port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int yes = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes) != 0 ||
        bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 1024) != 0) {
        int error = errno;
        if (fd >= 0) close(fd);
        errno = error;
        return -1;
    }
    return fd;
}

// Runs on a thread of its own, which is the only one moved into the namespace: brings loopback up and
// opens the listening socket there, so the socket stays in that namespace after the thread ends.
static void *listen_in_namespace(void *context) {
    struct listen_request *request = context;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)request->pid);
    int namespace_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (namespace_fd < 0 || setns(namespace_fd, CLONE_NEWNET) != 0) {
        request->error = errno;
        if (namespace_fd >= 0) close(namespace_fd);
        return NULL;
    }
    close(namespace_fd);
    int control = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq interface;
    memset(&interface, 0, sizeof interface);
    strncpy(interface.ifr_name, "lo", IFNAMSIZ - 1);
    if (control < 0 || ioctl(control, SIOCGIFFLAGS, &interface) != 0) {
        request->error = errno;
        if (control >= 0) close(control);
        return NULL;
    }
    interface.ifr_flags |= IFF_UP;
    if (ioctl(control, SIOCSIFFLAGS, &interface) != 0) {
        request->error = errno;
        close(control);
        return NULL;
    }
    close(control);
    for (int index = 0; index < 2; index++) {
        if (request->ports[index] == 0) continue;
        request->fds[index] = open_listener(request->ports[index]);
        if (request->fds[index] < 0) {
            request->error = errno;
            return NULL;
        }
    }
    return NULL;
}

static int prepare_network(pid_t pid, unsigned short port, unsigned short egress_port, int *listen_fd, int *egress_fd) {
    struct listen_request request = {.pid = pid, .ports = {port, egress_port}, .fds = {-1, -1}, .error = 0};
    pthread_t thread;
    int error = pthread_create(&thread, NULL, listen_in_namespace, &request);
    if (error != 0) return error;
    pthread_join(thread, NULL);
    *listen_fd = request.fds[0];
    *egress_fd = request.fds[1];
    return request.error;
}

int mg_spawn(const struct mg_spawn_config *config, struct mg_spawn_result *result) {
    result->listen_fd = -1;
    result->egress_fd = -1;
    result->notify_fd = -1;
    int sync_pipe[2], status_pipe[2], error_pipe[2];
    if (pipe2(sync_pipe, O_CLOEXEC) != 0) return errno;
    if (pipe2(status_pipe, O_CLOEXEC) != 0) {
        int error = errno;
        close(sync_pipe[0]);
        close(sync_pipe[1]);
        return error;
    }
    if (pipe2(error_pipe, O_CLOEXEC) != 0) {
        int error = errno;
        close(sync_pipe[0]);
        close(sync_pipe[1]);
        close(status_pipe[0]);
        close(status_pipe[1]);
        return error;
    }

    struct init_arguments arguments = {
        .config = config,
        .sync_read = sync_pipe[0], .sync_write = sync_pipe[1],
        .status_read = status_pipe[0], .status_write = status_pipe[1],
        .error_read = error_pipe[0], .error_write = error_pipe[1],
        .notify_write = -1,
        .without_namespaces = config->without_namespaces,
    };
    int notify_pair[2] = {-1, -1};
    if (config->seccomp_listener && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, notify_pair) != 0) {
        int error = errno;
        close(sync_pipe[0]);
        close(sync_pipe[1]);
        close(status_pipe[0]);
        close(status_pipe[1]);
        close(error_pipe[0]);
        close(error_pipe[1]);
        return error;
    }
    arguments.notify_write = notify_pair[1];
    sigprocmask(SIG_SETMASK, NULL, &arguments.original_mask);

    const size_t stack_size = 256 * 1024;
    char *stack = malloc(stack_size);
    int error = 0;
    pid_t pid = -1;
    if (stack == NULL) {
        error = ENOMEM;
    } else {
        int flags = SIGCHLD;
        if (!config->without_namespaces) {
            flags |= CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (config->new_user_namespace ? CLONE_NEWUSER : 0)
                | (config->new_network_namespace ? CLONE_NEWNET : 0);
        }
        pid = clone(init_main, stack + stack_size, flags, &arguments);
        if (pid < 0) error = errno;
        free(stack);  // the child runs on its own copy of this memory
    }
    close(sync_pipe[0]);
    close(status_pipe[1]);
    close(error_pipe[1]);
    if (notify_pair[1] >= 0) close(notify_pair[1]);
    if (pid > 0 && config->new_user_namespace && !arguments.without_namespaces) error = map_identity(pid);
    // In the run's cgroup before the program exists, so every process it starts is in it too.
    int procs_fds[2] = {config->cgroup_procs_fd, config->pids_procs_fd};
    for (int index = 0; index < 2; index++) {
        if (pid <= 0 || error != 0 || procs_fds[index] < 0) continue;
        char number[32];
        int length = snprintf(number, sizeof number, "%d", (int)pid);
        if (write(procs_fds[index], number, (size_t)length) != length) error = errno;
    }
    // The proxy's socket is listening before the program starts, so its first connection waits in the backlog.
    if (pid > 0 && error == 0 && config->new_network_namespace && !config->without_namespaces) error = prepare_network(pid, config->listen_port, config->egress_port,
                                                                                                 &result->listen_fd, &result->egress_fd);
    if (pid > 0 && error == 0) {
        char byte = 1;
        if (write(sync_pipe[1], &byte, 1) != 1) error = errno;
    }
    close(sync_pipe[1]);
    if (error != 0) {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        close(status_pipe[0]);
        close(error_pipe[0]);
        if (notify_pair[0] >= 0) close(notify_pair[0]);
        if (result->listen_fd >= 0) close(result->listen_fd);
        if (result->egress_fd >= 0) close(result->egress_fd);
        result->listen_fd = -1;
        result->egress_fd = -1;
        return error;
    }
    result->init_pid = pid;
    result->status_fd = status_pipe[0];
    result->error_fd = error_pipe[0];
    result->notify_fd = notify_pair[0];
    return 0;
}
