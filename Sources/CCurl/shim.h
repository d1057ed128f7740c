#ifndef MG_CCURL_SHIM_H
#define MG_CCURL_SHIM_H
#include <curl/curl.h>

// curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call;
// these wrappers fix the argument type for each kind of option.
static inline CURLcode mg_curl_setopt_long(CURL *_Nonnull handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode mg_curl_setopt_string(CURL *_Nonnull handle, CURLoption option, const char *_Nullable value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode mg_curl_setopt_pointer(CURL *_Nonnull handle, CURLoption option, void *_Nullable value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode mg_curl_setopt_slist(CURL *_Nonnull handle, CURLoption option, struct curl_slist *_Nullable value) {
    return curl_easy_setopt(handle, option, value);
}
typedef size_t (*mg_curl_data_callback)(char *_Nonnull data, size_t size, size_t count, void *_Nullable context);
static inline CURLcode mg_curl_setopt_data_callback(CURL *_Nonnull handle, CURLoption option, mg_curl_data_callback _Nullable callback) {
    return curl_easy_setopt(handle, option, callback);
}
static inline CURLcode mg_curl_getinfo_long(CURL *_Nonnull handle, CURLINFO info, long *_Nonnull value) {
    return curl_easy_getinfo(handle, info, value);
}
#endif
