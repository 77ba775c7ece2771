/*
 * tool.h - the hidden entry points the `setcache` tool uses besides the
 * public API (the DDL it prints), included by the tool and by tables.c and
 * replica.c, which define them. The tool links the static library to reach
 * them.
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

/*
 * Logical replication's DDL, printed after setcache__tool_schema's: with
 * primary NULL the primary's side (a publication named like the schema of
 * the settings, definitions, history and the n mapped tables; a warning
 * unless wal_level is logical; an error for a table without a replica
 * identity), else a subscriber's side (replicated rows and TRUNCATEs
 * announced, local writes refused, and the subscription to the primary at
 * conninfo `primary`, created by psql's \gexec only when missing). Both
 * idempotent. On success *out is the text (malloc'd). Returns OK, ERR_ARG
 * (schema or channel invalid, a map invalid, primary empty or over one
 * line), ERR_NOMEM.
 */
int setcache__tool_replication(const char *schema, const char *channel, const setcache_table_map *m,
                               size_t n, const char *primary, char **out);

#endif
