/*
 * tool.h - the one hidden entry point the `setcache` tool uses besides the
 * public API, included by the tool and by tables.c, which defines it. The
 * tool links the static library to reach it.
 */
#ifndef SETCACHE_TOOL_H
#define SETCACHE_TOOL_H

#include <stddef.h>

#include "setcache.h"

/*
 * The DDL a DBA applies: the built-in table, its sequence and triggers in
 * schema, notifying on channel, then the versioning and triggers of each of
 * the n mapped tables; then, for reader (may be NULL), the GRANTs to load
 * and listen, and for writer (may be NULL) those to write as well. On
 * success *out is the text (malloc'd). Returns OK, ERR_ARG (schema or
 * channel not [a-z_][a-z0-9_]*, a map invalid, a role name empty, over 63
 * bytes or with a control character; the message says which), ERR_NOMEM.
 */
int setcache__tool_schema(const char *schema, const char *channel, const setcache_table_map *m,
                          size_t n, const char *reader, const char *writer, char **out);

#endif
