#ifndef MG_CSQLITE_SHIM_H
#define MG_CSQLITE_SHIM_H

#include <sqlite3.h>

// SQLITE_TRANSIENT is a cast of -1 to a destructor pointer, which Swift
// cannot import; these wrappers make SQLite copy the bound text at once.
static inline int mg_sqlite_bind_text(sqlite3_stmt *_Nonnull statement, int index, const char *_Nonnull text) {
    return sqlite3_bind_text(statement, index, text, -1, SQLITE_TRANSIENT);
}

#endif
