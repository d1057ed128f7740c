#define _GNU_SOURCE
#include "mg_notify.h"

#include <errno.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

int mg_notify_receive(int listener, int timeout_ms, struct mg_notification *notification) {
    struct pollfd waiting = {.fd = listener, .events = POLLIN};
    int ready;
    do {
        ready = poll(&waiting, 1, timeout_ms);
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) return 0;
    if (ready < 0) return -1;
    // POLLHUP without POLLIN: every process under the filter has exited.
    if (!(waiting.revents & POLLIN)) return -1;
    struct seccomp_notif request;
    memset(&request, 0, sizeof request);  // the kernel refuses a request that is not zeroed
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &request) != 0) {
        // ENOENT: the caller died or was interrupted between the poll and the receive.
        return errno == ENOENT || errno == EINTR ? 0 : -1;
    }
    notification->id = request.id;
    notification->pid = (pid_t)request.pid;
    notification->system_call = request.data.nr;
    for (int index = 0; index < 6; index++) notification->arguments[index] = request.data.args[index];
    return 1;
}

int mg_notify_valid(int listener, uint64_t id) {
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

int mg_notify_respond(int listener, uint64_t id, int error) {
    struct seccomp_notif_resp response;
    memset(&response, 0, sizeof response);
    response.id = id;
    if (error == 0) {
        response.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    } else {
        response.error = -error;
    }
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &response) == 0 ? 0 : -1;
}

int mg_system_call_execve(void) { return SYS_execve; }
int mg_system_call_execveat(void) { return SYS_execveat; }
