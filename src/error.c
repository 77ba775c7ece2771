/*
 * error.c - return-code and state names, and the thread-local error
 * message: setcache__fail() records a message and returns its code.
 *
 * Owns: one thread-local buffer per thread. No locks.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char errbuf[1024];
static _Thread_local char sqlstate[6];

int setcache__fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    return code;
}

/* Record the server's (or libpq's) message for a failed step. The text comes
 * from PQresultErrorMessage / PQerrorMessage, which never carry a password. */
int setcache__fail_pg(int code, const char *what, const PGconn *conn, const PGresult *res)
{
    const char *msg = NULL;
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(sqlstate, sizeof sqlstate, "%s", st ? st : "");
    if (res) {
        msg = PQresultErrorMessage(res);
    }
    if ((!msg || !*msg) && conn) {
        msg = PQerrorMessage(conn);
    }
    if (!msg || !*msg) {
        msg = "no message";
    }
    size_t n = setcache__trim_len(msg, strlen(msg));
    snprintf(errbuf, sizeof errbuf, "%s: %.*s", what, (int)n, msg);
    return code;
}

/* SQLSTATE of the calling thread's last server error ("" if none). */
const char *setcache__sqlstate(void)
{
    return sqlstate;
}

void setcache__clear_error(void)
{
    errbuf[0] = '\0';
}

const char *setcache_errmsg(void)
{
    return errbuf;
}

const char *setcache_state_name(int state)
{
    switch (state) {
    case SETCACHE_STATE_CONNECTING:
        return "CONNECTING";
    case SETCACHE_STATE_VALID:
        return "VALID";
    case SETCACHE_STATE_INTERRUPTED:
        return "INTERRUPTED";
    default:
        return "CLOSED";
    }
}

const char *setcache_strerror(int rc)
{
    switch (rc) {
    case SETCACHE_OK:
        return "SETCACHE_OK: success";
    case SETCACHE_NOT_FOUND:
        return "SETCACHE_NOT_FOUND: no stored value and no default";
    case SETCACHE_ERR_ARG:
        return "SETCACHE_ERR_ARG: invalid argument";
    case SETCACHE_ERR_TYPE:
        return "SETCACHE_ERR_TYPE: value does not fit the type";
    case SETCACHE_ERR_SPACE:
        return "SETCACHE_ERR_SPACE: buffer too small";
    case SETCACHE_ERR_DB:
        return "SETCACHE_ERR_DB: database error";
    case SETCACHE_ERR_TIMEOUT:
        return "SETCACHE_ERR_TIMEOUT: no pooled connection became free in time";
    case SETCACHE_ERR_NOMEM:
        return "SETCACHE_ERR_NOMEM: out of memory";
    case SETCACHE_ERR_CLOSED:
        return "SETCACHE_ERR_CLOSED: handle is closing";
    case SETCACHE_ERR_UNCERTAIN:
        return "SETCACHE_ERR_UNCERTAIN: connection lost after commit was sent; outcome unknown";
    case SETCACHE_ERR_INVALID:
        return "SETCACHE_ERR_INVALID: the value breaks a rule of its definition";
    default:
        return "unknown error";
    }
}
