#ifndef MG_CMICROHTTPD_SHIM_H
#define MG_CMICROHTTPD_SHIM_H
#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>

// MHD_start_daemon is variadic, which Swift cannot call. This wrapper starts a
// daemon with one thread per connection on a socket that the caller already
// bound and put into the listening state, so a handler may block while it
// streams an upstream response.
static inline struct MHD_Daemon *_Nullable mg_mhd_start(
    int listen_fd,
    MHD_AccessHandlerCallback _Nonnull handler, void *_Nullable handler_context,
    MHD_RequestCompletedCallback _Nonnull completed, void *_Nullable completed_context,
    unsigned int connection_timeout_seconds) {
    return MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL,
        0, NULL, NULL, handler, handler_context,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, completed, completed_context,
        MHD_OPTION_CONNECTION_TIMEOUT, connection_timeout_seconds,
        MHD_OPTION_END);
}

// The reader-callback sentinels are macros with casts, which Swift does not import.
static const ssize_t mg_mhd_end_of_stream = MHD_CONTENT_READER_END_OF_STREAM;
static const ssize_t mg_mhd_end_with_error = MHD_CONTENT_READER_END_WITH_ERROR;
static const uint64_t mg_mhd_size_unknown = MHD_SIZE_UNKNOWN;
#endif
