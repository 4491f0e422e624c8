/*
 * conn.c - the listener, each connection's read loop, and parking/finishing requests (see
 * conn.h and server.h).
 *
 * I/O is plain non-blocking reads and writes rather than bufferevents: a reply is written as
 * soon as it is ready (one writev), and the connection asks for writability only when the
 * socket buffer is full, which keeps a request/reply round trip to about three system calls.
 *
 * Freeing is the delicate part: a connection can be closed while its read loop runs (a
 * closeConnection fail point), and a parked request can end from its timer, from another
 * connection's command (a stepdown answering hellos, an insert waking getMores) or from its own
 * connection closing. The rules: the read loop never frees its connection itself but marks it
 * `closing` and frees it on the way out; a request is freed exactly once, by
 * fts_double_request_finish / _close_connection or by the connection's destruction, and is
 * unlinked from its wait list and timer before.
 */
#include "conn.h"

#include "commands.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

static int32_t next_reply_id = 1;

static void conn_destroy(fts_double_conn_t *conn);
static void conn_pump(fts_double_conn_t *conn);

/* The errno values that mean "try again later" on a non-blocking socket. */
static bool io_would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* Writes what the output buffer holds; on a full socket waits for writability. A write error
 * marks the connection closing and lets the read loop free it. */
static void conn_flush(fts_double_conn_t *conn)
{
    while (evbuffer_get_length(conn->output) > 0) {
        int n = evbuffer_write(conn->output, conn->fd);
        if (n < 0) {
            if (io_would_block(errno)) {
                event_add(conn->write_ev, NULL);
                return;
            }
            conn->closing = true;
            if (!conn->in_pump) {
                event_active(conn->resume_ev, EV_WRITE, 0);
            }
            return;
        }
    }
}

void fts_double_waitlist_add(fts_double_waitlist_t *list, fts_double_request_t *req)
{
    req->waitlist = list;
    req->wait_prev = NULL;
    req->wait_next = list->head;
    if (list->head) {
        list->head->wait_prev = req;
    }
    list->head = req;
}

void fts_double_waitlist_remove(fts_double_request_t *req)
{
    if (!req->waitlist) {
        return;
    }
    if (req->wait_prev) {
        req->wait_prev->wait_next = req->wait_next;
    } else {
        req->waitlist->head = req->wait_next;
    }
    if (req->wait_next) {
        req->wait_next->wait_prev = req->wait_prev;
    }
    req->waitlist = NULL;
    req->wait_prev = req->wait_next = NULL;
}

static void request_free(fts_double_request_t *req)
{
    fts_double_waitlist_remove(req);
    if (req->timer) {
        event_free(req->timer);
    }
    fts_double_fail_action_clear(&req->fail);
    bson_free(req->db);
    bson_free(req->msg);
    free(req); /* posix_memalign'd: see request_new */
}

/* A request embeds a bson_t, which libbson declares 128-byte aligned; malloc promises less. */
static fts_double_request_t *request_new(fts_double_conn_t *conn)
{
    void *mem = NULL;
    if (posix_memalign(&mem, 128, sizeof(fts_double_request_t)) != 0) {
        fprintf(stderr, "ftsync-mongo-double: out of memory\n");
        abort();
    }
    fts_double_request_t *req = mem;
    memset(req, 0, sizeof *req);
    req->conn = conn;
    return req;
}

/* Detaches a parked request from its connection and lets the connection read on. */
static void request_unpark(fts_double_request_t *req)
{
    fts_double_waitlist_remove(req);
    if (req->timer) {
        event_del(req->timer);
    }
    fts_double_conn_t *conn = req->conn;
    if (conn->busy == req) {
        conn->busy = NULL;
        if (!conn->in_pump && !conn->closing) {
            event_active(conn->resume_ev, EV_WRITE, 0);
        }
    }
}

static void on_park_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_double_request_t *req = arg;
    req->on_timeout(req);
}

static void arm_timer(fts_double_request_t *req, int64_t timeout_ms)
{
    if (!req->timer) {
        req->timer = evtimer_new(req->conn->srv->base, on_park_timeout, req);
    }
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    evtimer_add(req->timer, &tv);
}

void fts_double_request_park(fts_double_request_t *req, fts_double_waitlist_t *list,
                             int64_t timeout_ms, fts_double_request_fn on_timeout,
                             fts_double_request_fn on_cancel)
{
    req->conn->busy = req;
    req->on_timeout = on_timeout;
    req->on_cancel = on_cancel;
    if (list) {
        fts_double_waitlist_add(list, req);
    }
    if (timeout_ms >= 0) {
        arm_timer(req, timeout_ms);
    }
}

void fts_double_request_finish(fts_double_request_t *req, const bson_t *reply)
{
    fts_double_conn_t *conn = req->conn;
    if (reply && !req->no_reply && !conn->closing) {
        fts_double_wire_frame_reply(req, reply, next_reply_id++, conn->output);
        if (!conn->in_pump) {
            conn_flush(conn); /* the read loop flushes once for everything it answered */
        }
    }
    bool parked = conn->busy == req;
    request_unpark(req);
    if (parked || !conn->in_pump) {
        request_free(req);
    } else {
        /* The read loop owns a request it is dispatching; mark it done for the loop to free. */
        req->opcode = -1;
    }
}

void fts_double_request_close_connection(fts_double_request_t *req)
{
    fts_double_conn_t *conn = req->conn;
    fts_double_log(conn->srv, "conn=%llu closed by failCommand closeConnection",
                   (unsigned long long)conn->id);
    fts_double_request_finish(req, NULL);
    if (conn->in_pump) {
        conn->closing = true;
    } else {
        conn_destroy(conn);
    }
}

static void conn_destroy(fts_double_conn_t *conn)
{
    fts_double_server_t *srv = conn->srv;
    if (conn->busy) {
        fts_double_request_t *req = conn->busy;
        conn->busy = NULL;
        fts_double_waitlist_remove(req);
        if (req->on_cancel) {
            req->on_cancel(req);
        }
        request_free(req);
    }
    if (conn->prev) {
        conn->prev->next = conn->next;
    } else {
        srv->conns = conn->next;
    }
    if (conn->next) {
        conn->next->prev = conn->prev;
    }
    srv->conn_count--;
    fts_double_log(srv, "conn=%llu closed (%s)", (unsigned long long)conn->id, conn->peer);
    event_free(conn->read_ev);
    event_free(conn->write_ev);
    event_free(conn->resume_ev);
    evbuffer_free(conn->input);
    evbuffer_free(conn->output);
    evutil_closesocket(conn->fd);
    bson_free(conn->app_name);
    bson_free(conn);
}

/* Reads and dispatches whole messages until none is complete or one is parked. */
static void conn_pump(fts_double_conn_t *conn)
{
    struct evbuffer *input = conn->input;
    conn->in_pump = true;
    while (!conn->busy && !conn->closing) {
        size_t available = evbuffer_get_length(input);
        if (available < 16) {
            break;
        }
        uint8_t prefix[4];
        evbuffer_copyout(input, prefix, 4);
        int32_t len = (int32_t)((uint32_t)prefix[0] | (uint32_t)prefix[1] << 8 |
                                (uint32_t)prefix[2] << 16 | (uint32_t)prefix[3] << 24);
        if (len < 16 || len > FTS_DOUBLE_MAX_MESSAGE_SIZE) {
            fts_double_log(conn->srv, "conn=%llu sent a message of invalid length %d",
                           (unsigned long long)conn->id, len);
            conn->closing = true;
            break;
        }
        if (available < (size_t)len) {
            break;
        }
        fts_double_request_t *req = request_new(conn);
        req->msg_len = (uint32_t)len;
        req->msg = bson_malloc((size_t)len);
        evbuffer_remove(input, req->msg, (size_t)len);
        fts_double_dispatch(conn->srv, req);
        /* Dispatch answered (opcode -1), parked (conn->busy) or closed the connection. */
        if (req->opcode == -1 || (conn->closing && conn->busy != req)) {
            request_free(req);
        }
    }
    conn->in_pump = false;
    if (!conn->closing) {
        conn_flush(conn);
    }
    conn->srv->spin_until_us = fts_double_mono_us() + FTS_DOUBLE_SPIN_US;
    if (conn->closing) {
        conn_destroy(conn);
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    fts_double_conn_t *conn = arg;
    struct evbuffer_iovec vec;
    /* One read() into the input buffer; level-triggered polling brings us back for more. */
    if (evbuffer_reserve_space(conn->input, 65536, &vec, 1) != 1) {
        conn_destroy(conn);
        return;
    }
    ssize_t n = recv(fd, vec.iov_base, vec.iov_len, 0);
    if (n < 0 && io_would_block(errno)) {
        evbuffer_commit_space(conn->input, &vec, 0);
        return;
    }
    if (n <= 0) {
        evbuffer_commit_space(conn->input, &vec, 0);
        conn_destroy(conn); /* the client closed the connection, or it broke */
        return;
    }
    vec.iov_len = (size_t)n;
    evbuffer_commit_space(conn->input, &vec, 1);
    conn_pump(conn);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_double_conn_t *conn = arg;
    conn_flush(conn);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_pump(arg);
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                      int socklen, void *arg)
{
    (void)listener;
    (void)socklen;
    fts_double_server_t *srv = arg;
    int one = 1;
    /* Replies are small and latency-bound; Nagle would cost 40 ms per round trip. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fts_double_conn_t *conn = bson_malloc0(sizeof *conn);
    conn->srv = srv;
    conn->id = ++srv->conns_created;
    if (addr->sa_family == AF_INET) {
        /* Copied: a struct sockaddr * promises less alignment than a sockaddr_in needs. */
        struct sockaddr_in in;
        memcpy(&in, addr, sizeof in);
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &in.sin_addr, ip, sizeof ip);
        snprintf(conn->peer, sizeof conn->peer, "%s:%d", ip, ntohs(in.sin_port));
    } else {
        snprintf(conn->peer, sizeof conn->peer, "unknown");
    }
    evutil_make_socket_nonblocking(fd);
    conn->fd = fd;
    conn->input = evbuffer_new();
    conn->output = evbuffer_new();
    conn->read_ev = event_new(srv->base, fd, EV_READ | EV_PERSIST, on_read, conn);
    conn->write_ev = event_new(srv->base, fd, EV_WRITE, on_write, conn);
    conn->resume_ev = event_new(srv->base, -1, 0, on_resume, conn);
    event_add(conn->read_ev, NULL);
    conn->next = srv->conns;
    if (srv->conns) {
        srv->conns->prev = conn;
    }
    srv->conns = conn;
    srv->conn_count++;
    fts_double_log(srv, "conn=%llu accepted from %s", (unsigned long long)conn->id, conn->peer);
}

static void on_accept_error(struct evconnlistener *listener, void *arg)
{
    (void)listener;
    fts_double_server_t *srv = arg;
    int err = EVUTIL_SOCKET_ERROR();
    fprintf(stderr, "ftsync-mongo-double: accept failed: %s\n", evutil_socket_error_to_string(err));
    (void)srv;
}

bool fts_double_listen(fts_double_server_t *srv, const char *bind_addr, int port)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    const char *addr = strcmp(bind_addr, "localhost") == 0 ? "127.0.0.1" : bind_addr;
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "ftsync-mongo-double: --bind %s is not an IPv4 address\n", bind_addr);
        return false;
    }
    srv->listener = evconnlistener_new_bind(srv->base, on_accept, srv,
                                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                            (struct sockaddr *)&sin, sizeof sin);
    if (!srv->listener) {
        fprintf(stderr, "ftsync-mongo-double: cannot listen on %s:%d: %s\n", addr, port,
                strerror(errno));
        return false;
    }
    evconnlistener_set_error_cb(srv->listener, on_accept_error);
    struct sockaddr_in bound;
    socklen_t len = sizeof bound;
    getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&bound, &len);
    srv->port = ntohs(bound.sin_port);
    /* hello's hosts/me/primary: what clients connect to. 0.0.0.0 is not connectable. */
    const char *host = strcmp(addr, "0.0.0.0") == 0 ? "127.0.0.1" : addr;
    snprintf(srv->host, sizeof srv->host, "%s:%d", host, srv->port);
    return true;
}

void fts_double_conns_shutdown(fts_double_server_t *srv)
{
    while (srv->conns) {
        conn_destroy(srv->conns);
    }
    if (srv->listener) {
        evconnlistener_free(srv->listener);
        srv->listener = NULL;
    }
}
