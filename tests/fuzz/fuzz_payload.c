/*
 * fuzz_payload.c - libFuzzer target for the notification payload parser.
 * Payloads are public (anyone who can connect may NOTIFY on the channel):
 * whatever the bytes, the parser must not crash, and whatever it accepts
 * must be a well-formed hint with a valid identity (a change, or a shared
 * definition's change) or a truncate, a tick or an older heartbeat, which
 * carry none.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *payload = malloc(size + 1);
    if (!payload) {
        return 0;
    }
    memcpy(payload, data, size);
    payload[size] = '\0'; /* PostgreSQL payloads never contain NUL */
    char buf[8001];
    char op = 0;
    int64_t version = -1;
    sc_ident id;
    if (setcache__parse_payload(payload, buf, sizeof buf, &op, &version, &id) == 0) {
        if (version < 0 || !strchr("IUDTHKF", op)) {
            abort();
        }
        if (op != 'T' && op != 'H' && op != 'K') {
            size_t t, i, k;
            if (setcache__check_identity(id.type, id.id, id.key, &t, &i, &k) != SETCACHE_OK ||
                t != id.tlen || i != id.ilen || k != id.klen) {
                abort();
            }
        }
    }
    free(payload);
    return 0;
}
