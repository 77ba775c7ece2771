/* The README's subscription example: rebuild an object when its settings
 * change, wherever the change comes from. Compiled by `make`. */
#include <setcache.h>
#include <stdio.h>

struct broker {
    char api_key[128];
    int rebuilds;
};

static void broker_rebuild(struct broker *b, setcache *c)
{
    /* read the current value from the cache: no query */
    setcache_get_string(c, "account", "42", "api_key", b->api_key, sizeof b->api_key, NULL);
    b->rebuilds++;
}

static void broker_disable(struct broker *b)
{
    b->api_key[0] = '\0';
}

static setcache *cache;

static void on_api_key(void *arg, const setcache_change *ch)
{
    struct broker *b = arg;
    if (ch->kind == SETCACHE_CHANGE_RESYNC || ch->kind == SETCACHE_CHANGE_SET) {
        broker_rebuild(b, cache); /* runs on the library's dispatch thread */
    } else {
        broker_disable(b); /* the key was deleted */
    }
}

int main(void)
{
    setcache_options o;
    setcache_options_init(&o);
    o.create_schema = true;
    if (setcache_open(&cache, &o) != SETCACHE_OK) {
        fprintf(stderr, "open: %s\n", setcache_errmsg());
        return 1;
    }
    struct broker broker = {"", 0};
    uint64_t sub;
    setcache_subscribe(cache, "account", "42", "api_key", on_api_key, &broker, &sub);
    setcache_set_string(cache, "account", "42", "api_key", "new-key");
    /* ... the application runs; psql or another process may change the key ... */
    setcache_unsubscribe(cache, sub); /* after this returns, on_api_key never runs again */
    setcache_close(cache);
    return 0;
}
