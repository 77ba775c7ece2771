/*
 * cli.h - what the files of the setcache tool share (cli.c: options,
 * commands on a handle, output helpers; cli_admin.c: the managed-settings
 * commands that query the schema's tables directly).
 */
#ifndef SETCACHE_CLI_H
#define SETCACHE_CLI_H

#include "setcache.h"

#include <stdbool.h>
#include <stdio.h>

int tool_usage(void);                          /* print the usage; exit code 2 */
int tool_fail(int rc, const char *what);       /* say what failed; its exit code */
void tool_put_escaped(FILE *f, const char *s); /* text for a person, escaped */
void tool_json_str(FILE *f, const char *s);    /* a JSON string (or null) */

/* describe, history, get TYPE ID KEY --at TIME, export, import on the
 * handle's schema (json: describe and history as JSON); the exit code. */
int tool_admin(setcache *c, const char *schema, bool json, const char *cmd, int nargs, char **args);

#endif
