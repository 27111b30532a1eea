/*
 * Hand-written edge-triggered epoll echo server: the baseline for what the readiness
 * model can do, with nothing between the loop and the system calls.
 *
 *   c_epoll_echo [--port N]
 *
 * Same protocol as benchmarks/echo_server: binds 127.0.0.1:N (0 = any free port),
 * prints "port N", echoes every byte on every connection (TCP_NODELAY), one thread,
 * exits with status 0 on SIGINT/SIGTERM after closing everything.
 *
 * The cost per message at depth 1 is one recv, one send and (shared by every
 * connection that became ready together) one epoll_wait:
 *  - each connection is registered once, EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET, so the
 *    steady state has no epoll_ctl;
 *  - a read that returns less than the buffer counts as having drained the socket:
 *    edge-triggered epoll reports every later arrival anyway, so reading again only
 *    to collect EAGAIN would be a wasted system call;
 *  - signals arrive through a signalfd in the same epoll set, so the loop makes no
 *    system call of its own for them.
 * Memory per idle connection is a 24-byte slot in a table indexed by fd: reads go
 * through one shared 64 KiB buffer, and a connection owns storage only while the
 * kernel refuses part of an echo (a short send).
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    READ_BUFFER = 64 * 1024, /* shared by every connection */
    MAX_EVENTS = 4096,       /* events taken per epoll_wait */
    BACKLOG = 4096,
};

/* Per-connection state, indexed by fd. `pending` holds the part of an echo that a
 * short send left behind; while it is non-empty the connection is not read, which
 * bounds it to one read's worth and pushes back on a client that does not read. */
struct conn {
    char* pending;
    uint32_t offset; /* first unsent byte of pending */
    uint32_t length; /* bytes in pending */
    uint8_t open;
};

static struct conn* conns;
static size_t conn_capacity;
static char read_buffer[READ_BUFFER];
static struct epoll_event events[MAX_EVENTS];

/* Parses `--port N` / `--port=N`; exits with status 2 on anything else. */
static uint16_t parse_port(int argc, char** argv) {
    const char* text = NULL;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--port") == 0) {
            if (i + 1 == argc) {
                fprintf(stderr, "error: option --port needs a value\n");
                exit(2);
            }
            text = argv[++i];
        } else if (strncmp(argv[i], "--port=", 7) == 0) {
            text = argv[i] + 7;
        } else {
            fprintf(stderr, "error: unknown argument '%s' (usage: %s [--port N])\n", argv[i], argv[0]);
            exit(2);
        }
    }
    if (text == NULL) return 0;
    char* end = NULL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || text[0] == '+' || v > 65535) {
        fprintf(stderr, "error: --port must be a number 0..65535, got '%s'\n", text);
        exit(2);
    }
    return (uint16_t)v;
}

/* 10,000 connections need more descriptors than the usual soft limit of 1024. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) perror("warning: setrlimit(RLIMIT_NOFILE)");
    }
}

static size_t fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur > (1u << 20)) return 1u << 20;
    return (size_t)rl.rlim_cur;
}

static int listen_loopback(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr*)&a, sizeof a) != 0 || listen(fd, BACKLOG) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO: no system call */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void close_conn(int fd) {
    struct conn* c = &conns[fd];
    free(c->pending);
    memset(c, 0, sizeof *c);
    close(fd); /* also removes it from the epoll set */
}

/* Sends what a short send left behind. Returns 1 when all of it is gone, 0 when the
 * socket is full again (wait for the next EPOLLOUT edge), -1 on error. A short send
 * means full, like EAGAIN: it arms the same wake-up, so no send is made to confirm it. */
static int flush_pending(int fd, struct conn* c) {
    ssize_t n;
    do n = send(fd, c->pending + c->offset, c->length, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->offset += (uint32_t)n;
    c->length -= (uint32_t)n;
    if (c->length > 0) return 0;
    free(c->pending);
    c->pending = NULL;
    c->offset = 0;
    return 1;
}

/* Reads and echoes until the socket is drained, EOF or a short send. `until_eagain`
 * is set when the peer has shut down its side: the final data and the EOF can come
 * in one edge, so a short read is not the end there and the loop must see the 0. */
static void echo(int fd, struct conn* c, int until_eagain) {
    for (;;) {
        ssize_t n = recv(fd, read_buffer, READ_BUFFER, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) return;
            close_conn(fd); /* EOF, or an error such as ECONNRESET */
            return;
        }
        ssize_t sent = send(fd, read_buffer, (size_t)n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                close_conn(fd);
                return;
            }
            sent = 0; /* EINTR before any byte went out: keep everything */
        }
        if (sent < n) {
            /* Keep the rest, in order, and stop reading until EPOLLOUT drains it. */
            size_t rest = (size_t)(n - sent);
            c->pending = malloc(rest);
            if (c->pending == NULL) {
                close_conn(fd);
                return;
            }
            memcpy(c->pending, read_buffer + sent, rest);
            c->offset = 0;
            c->length = (uint32_t)rest;
            return;
        }
        if (n < READ_BUFFER && !until_eagain) return; /* short read: drained */
    }
}

static void on_conn_event(int fd, uint32_t ev) {
    struct conn* c = &conns[fd];
    if (!c->open) return;
    if (ev & (EPOLLERR | EPOLLHUP)) {
        close_conn(fd);
        return;
    }
    if (c->length > 0) {
        /* A short send is outstanding: echo nothing new until it is flushed. The event
         * mask is the socket's current state, so no EPOLLOUT means still full. */
        if (!(ev & EPOLLOUT)) return;
        int r = flush_pending(fd, c);
        if (r < 0) close_conn(fd);
        if (r <= 0) return;
        /* Flushed. The reads skipped meanwhile produced no new edge, so read now. */
        echo(fd, c, 1);
        return;
    }
    if (ev & EPOLLIN) echo(fd, c, (ev & EPOLLRDHUP) != 0);
}

/* Accepts until EAGAIN (the listener is edge-triggered). Returns 0, or 1 when out of
 * descriptors or memory: the caller then stops accepting for a millisecond instead of
 * retrying a hopeless accept in a busy loop, and keeps serving established
 * connections meanwhile. */
static int accept_all(int lfd, int ep) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
                return 0;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                return 1;
            default: /* ECONNABORTED, EINTR, EPERM...: that connection only */
                continue;
            }
        }
        if ((size_t)fd >= conn_capacity) { /* cannot happen below the fd limit */
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0) {
            close(fd);
            continue;
        }
        conns[fd].open = 1;
        /* No read here: data that came with the connection is reported by the ADD. */
    }
}

int main(int argc, char** argv) {
    uint16_t port = parse_port(argc, argv);
    raise_fd_limit();
    conn_capacity = fd_limit();
    /* calloc'd pages stay unmapped until a connection with such an fd touches them. */
    conns = calloc(conn_capacity, sizeof *conns);
    if (conns == NULL) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }

    /* SIGINT/SIGTERM become readable events on a signalfd in the epoll set. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &stop_signals, NULL) != 0) {
        perror("error: sigprocmask");
        return 1;
    }
    int sfd = signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        perror("error: signalfd");
        return 1;
    }

    int lfd = listen_loopback(port);
    if (lfd < 0) {
        fprintf(stderr, "error: listen on 127.0.0.1:%u: %s\n", port, strerror(errno));
        return 1;
    }
    struct sockaddr_in bound;
    socklen_t bound_len = sizeof bound;
    if (getsockname(lfd, (struct sockaddr*)&bound, &bound_len) != 0) {
        perror("error: getsockname");
        return 1;
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("error: epoll_create1");
        return 1;
    }
    struct epoll_event le = {.events = EPOLLIN | EPOLLET, .data.fd = lfd};
    struct epoll_event se = {.events = EPOLLIN, .data.fd = sfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &se) != 0) {
        perror("error: epoll_ctl");
        return 1;
    }

    printf("port %u\n", ntohs(bound.sin_port));
    fflush(stdout);

    int running = 1;
    uint64_t accept_paused_until = 0; /* nonzero: accepting resumes at this time */
    while (running) {
        int timeout = -1;
        if (accept_paused_until != 0) {
            uint64_t now = now_ns();
            if (now >= accept_paused_until) {
                accept_paused_until = accept_all(lfd, ep) ? now + 1000000 : 0;
            }
            if (accept_paused_until != 0) timeout = (int)((accept_paused_until - now + 999999) / 1000000);
        }
        int n = epoll_wait(ep, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("error: epoll_wait");
            break;
        }
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                /* While paused the retry above owns accepting; this edge is not lost,
                 * as the retry accepts until EAGAIN. */
                if (accept_paused_until == 0 && accept_all(lfd, ep)) accept_paused_until = now_ns() + 1000000;
            } else if (fd == sfd) {
                running = 0;
            } else {
                on_conn_event(fd, events[i].events);
            }
        }
    }

    for (size_t fd = 0; fd < conn_capacity; ++fd)
        if (conns[fd].open) close_conn((int)fd);
    free(conns);
    close(ep);
    close(lfd);
    close(sfd);
    return 0;
}
