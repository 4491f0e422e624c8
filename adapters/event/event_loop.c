/*
 * event_loop.c - libevent behind event_loop.h (see there). libevent fails to make an event, or
 * to add a timeout, only when it cannot allocate: that aborts (fts_fatal_oom).
 */
#include "event_loop.h"

#include <bson/bson.h>
#include <event2/event.h>

#include "error.h"

struct fts_event_loop {
    struct event_base *base;
};

struct fts_event_timer {
    struct event *event;
    fts_event_fn fn;
    void *arg;
};

struct fts_event_watch {
    struct event *event;
    fts_event_fn fn;
    void *arg;
};

typedef struct {
    fts_event_fn fn;
    void *arg;
} deferred_t;

fts_event_loop_t *fts_event_loop_new(void)
{
    fts_event_loop_t *loop = bson_malloc0(sizeof *loop);
    loop->base = event_base_new();
    if (!loop->base) {
        bson_free(loop);
        return NULL;
    }
    return loop;
}

void fts_event_loop_destroy(fts_event_loop_t *loop)
{
    if (loop) {
        event_base_free(loop->base);
        bson_free(loop);
    }
}

struct event_base *fts_event_loop_base(fts_event_loop_t *loop)
{
    return loop->base;
}

bool fts_event_loop_run(fts_event_loop_t *loop)
{
    return event_base_dispatch(loop->base) >= 0;
}

void fts_event_loop_break(fts_event_loop_t *loop)
{
    event_base_loopbreak(loop->base);
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    deferred_t call = *(deferred_t *)arg;
    bson_free(arg);
    call.fn(call.arg);
}

void fts_event_loop_defer(fts_event_loop_t *loop, fts_event_fn fn, void *arg)
{
    deferred_t *call = bson_malloc(sizeof *call);
    call->fn = fn;
    call->arg = arg;
    const struct timeval now = {0, 0};
    if (event_base_once(loop->base, -1, EV_TIMEOUT, on_deferred, call, &now) != 0) {
        fts_fatal_oom("a deferred call");
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_event_timer_t *timer = arg;
    timer->fn(timer->arg);
}

fts_event_timer_t *fts_event_timer_new(fts_event_loop_t *loop, fts_event_fn fn, void *arg)
{
    fts_event_timer_t *timer = bson_malloc0(sizeof *timer);
    timer->fn = fn;
    timer->arg = arg;
    timer->event = evtimer_new(loop->base, on_timer, timer);
    if (!timer->event) {
        fts_fatal_oom("a timer");
    }
    return timer;
}

void fts_event_timer_arm(fts_event_timer_t *timer, uint64_t delay_ms)
{
    struct timeval delay = {.tv_sec = (time_t)(delay_ms / 1000),
                            .tv_usec = (suseconds_t)((delay_ms % 1000) * 1000)};
    evtimer_add(timer->event, &delay);
}

void fts_event_timer_destroy(fts_event_timer_t *timer)
{
    if (timer) {
        event_free(timer->event);
        bson_free(timer);
    }
}

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_event_watch_t *watch = arg;
    watch->fn(watch->arg);
}

fts_event_watch_t *fts_event_watch_new(fts_event_loop_t *loop, int fd, fts_event_fn fn, void *arg)
{
    fts_event_watch_t *watch = bson_malloc0(sizeof *watch);
    watch->fn = fn;
    watch->arg = arg;
    watch->event = event_new(loop->base, fd, EV_READ | EV_PERSIST, on_watch, watch);
    if (!watch->event) {
        fts_fatal_oom("an event watching a file descriptor");
    }
    if (event_add(watch->event, NULL) != 0) {
        event_free(watch->event);
        bson_free(watch);
        return NULL;
    }
    return watch;
}

void fts_event_watch_stop(fts_event_watch_t *watch)
{
    event_del(watch->event);
}

void fts_event_watch_destroy(fts_event_watch_t *watch)
{
    if (watch) {
        event_free(watch->event);
        bson_free(watch);
    }
}
