/* Peer echo server written with libuv, for the backend comparison. Same protocol as
 * benchmarks/echo_server:
 *
 *   uv_echo [--port N]        (also --port=N; default 0 = ephemeral)
 *
 * Binds 127.0.0.1:N (SO_REUSEADDR, backlog 4096), prints "port N", echoes every byte
 * with TCP_NODELAY on libuv's default loop (one thread), and exits with status 0 on
 * SIGINT/SIGTERM after closing every handle.
 *
 * Buffers: libuv hands the read buffer to us, and uv_write keeps using it until its
 * callback (it writes at once when it can, but may queue the rest), so every read
 * needs a buffer of its own until its echo is written. This is the standard
 * malloc-per-read pattern, except that the buffers (each with its uv_write_t) come
 * from a free list: after warm-up no message costs a malloc. The list holds at most
 * as many blocks as were ever in flight at once. */
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* 16 KiB per read, ignoring libuv's suggested 64 KiB: the same per-read size as the
 * weft and Asio echo servers, so that the comparison measures the libraries. */
#define BLOCK_SIZE (16 * 1024)

/* One read's data plus the write request that echoes it. */
typedef struct block {
    uv_write_t req;
    struct block* next; /* free-list link while unused */
    char data[BLOCK_SIZE];
} block;

/* One connection. `paused` is set while reading is stopped for backpressure. */
typedef struct conn {
    uv_tcp_t tcp;
    int paused;
} conn;

static block* free_blocks;

static block* block_get(void) {
    block* b = free_blocks;
    if (b) {
        free_blocks = b->next;
        return b;
    }
    return malloc(sizeof(block));
}

static void block_put(block* b) {
    b->next = free_blocks;
    free_blocks = b;
}

static block* block_of_data(char* data) { return (block*)(data - offsetof(block, data)); }

/* Close callback for every handle: connections carry their conn in `data`, the
 * listener and the signal handles carry NULL. */
static void on_closed(uv_handle_t* h) { free(h->data); }

static void close_conn(uv_stream_t* s) {
    if (!uv_is_closing((uv_handle_t*)s)) uv_close((uv_handle_t*)s, on_closed);
}

static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
    (void)h;
    (void)suggested;
    block* b = block_get();
    /* A null buffer makes libuv report UV_ENOBUFS to on_read, which closes. */
    *buf = b ? uv_buf_init(b->data, BLOCK_SIZE) : uv_buf_init(NULL, 0);
}

/* Reads start writes, and a write that drains the queue resumes paused reading. */
static void on_write(uv_write_t* req, int status);

static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
    block* b = buf->base ? block_of_data(buf->base) : NULL;
    if (nread <= 0) {
        /* 0 is EAGAIN: libuv returns the buffer it asked for. Below 0: EOF or error. */
        if (b) block_put(b);
        if (nread < 0) close_conn(s);
        return;
    }
    uv_buf_t out = uv_buf_init(b->data, (unsigned int)nread);
    if (uv_write(&b->req, s, &out, 1, on_write) != 0) {
        block_put(b);
        close_conn(s);
        return;
    }
    /* uv_write writes at once when the socket takes it all (the usual case), leaving
     * nothing queued. If the peer is not reading, the rest waits in libuv's queue;
     * stop reading until it drains, so a peer cannot make us buffer without bound. */
    if (uv_stream_get_write_queue_size(s) > 0) {
        ((conn*)s->data)->paused = 1;
        uv_read_stop(s);
    }
}

static void on_write(uv_write_t* req, int status) {
    uv_stream_t* s = req->handle;
    block_put((block*)req); /* req is the block's first member */
    if (status < 0) {       /* a reset, or UV_ECANCELED because we are closing */
        close_conn(s);
        return;
    }
    conn* c = s->data;
    if (c->paused && uv_stream_get_write_queue_size(s) == 0) {
        c->paused = 0;
        uv_read_start(s, on_alloc, on_read);
    }
}

static void on_connection(uv_stream_t* server, int status) {
    /* libuv handles EMFILE/ENFILE itself: it closes a descriptor it keeps in reserve,
     * accepts and drops the pending connections, and reopens the reserve, so the
     * listener neither spins nor reaches us; there is no hook to back off instead.
     * Any other accept error is transient; wait for the next connection. */
    if (status < 0) return;
    conn* c = malloc(sizeof(conn));
    if (!c) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
    c->paused = 0;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t*)&c->tcp) != 0) {
        uv_close((uv_handle_t*)&c->tcp, on_closed);
        return;
    }
    /* Without it, Nagle holds back small echoes while the peer delays its ACK. */
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t*)&c->tcp, on_alloc, on_read);
}

static void close_walk(uv_handle_t* h, void* arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, on_closed);
}

/* SIGINT/SIGTERM: close every handle (listener, connections, signals). Pending writes
 * complete with UV_ECANCELED and return their blocks; uv_run then returns on its own
 * because nothing is left active. */
static void on_signal(uv_signal_t* h, int signum) {
    (void)signum;
    uv_walk(h->loop, close_walk, NULL);
}

/* Parses `--port N` / `--port=N`; exits with status 2 naming the problem otherwise. */
static int parse_port(int argc, char** argv) {
    long port = 0;
    for (int i = 1; i < argc; ++i) {
        const char* value;
        if (strcmp(argv[i], "--port") == 0) {
            if (i + 1 == argc) {
                fprintf(stderr, "error: option --port needs a value\n");
                exit(2);
            }
            value = argv[++i];
        } else if (strncmp(argv[i], "--port=", 7) == 0) {
            value = argv[i] + 7;
        } else {
            fprintf(stderr, "error: unknown argument '%s' (usage: %s [--port N])\n", argv[i], argv[0]);
            exit(2);
        }
        char* end;
        errno = 0;
        port = strtol(value, &end, 10);
        /* strtol skips blanks and takes signs; a port is digits only. */
        if (value[0] < '0' || value[0] > '9' || *end != '\0' || errno != 0 || port > 65535) {
            fprintf(stderr, "error: --port must be a number 0..65535, got '%s'\n", value);
            exit(2);
        }
    }
    return (int)port;
}

int main(int argc, char** argv) {
    int port = parse_port(argc, argv);

    /* 10,000 connections need more descriptors than the usual soft limit of 1024. */
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &lim);
    }
    /* libuv writes with write()/writev(), which raise SIGPIPE on a reset connection. */
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t* loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    server.data = NULL;

    /* libuv sets SO_REUSEADDR itself on every TCP bind on Unix. It may defer a bind
     * error such as EADDRINUSE to uv_listen, hence one check for both. */
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    int r = uv_tcp_bind(&server, (const struct sockaddr*)&addr, 0);
    if (r == 0) r = uv_listen((uv_stream_t*)&server, 4096, on_connection);
    if (r != 0) {
        fprintf(stderr, "error: listen on 127.0.0.1:%d: %s\n", port, uv_strerror(r));
        return 1;
    }
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&server, (struct sockaddr*)&bound, &len);
    printf("port %u\n", (unsigned)ntohs(bound.sin_port));
    fflush(stdout);

    uv_signal_t sigint, sigterm;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    sigint.data = sigterm.data = NULL;
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);

    uv_run(loop, UV_RUN_DEFAULT);

    r = uv_loop_close(loop);
    while (free_blocks) {
        block* b = free_blocks;
        free_blocks = b->next;
        free(b);
    }
    if (r != 0) {
        fprintf(stderr, "error: loop still busy at exit: %s\n", uv_strerror(r));
        return 1;
    }
    return 0;
}
