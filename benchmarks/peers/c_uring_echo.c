/*
 * Hand-written io_uring echo server: the baseline for what the completion model can do,
 * with nothing between the loop and the ring.
 *
 *   c_uring_echo [--port N]
 *
 * Same protocol as benchmarks/echo_server: binds 127.0.0.1:N (0 = any free port),
 * prints "port N", echoes every byte on every connection (TCP_NODELAY), one thread,
 * exits with status 0 on SIGINT/SIGTERM after closing everything.
 *
 * The loop makes one system call per iteration, io_uring_submit_and_wait(1), and then
 * handles every completion that is ready:
 *  - one multishot accept for the listener;
 *  - per connection one multishot recv that picks its buffers from a provided-buffer
 *    ring, so a connection owns no receive memory while idle;
 *  - each received buffer is sent back as it is (no copy) and goes back to the ring
 *    when its send completes. Sends on a connection are kept in order by a FIFO of
 *    received buffers, linked through the buffer ids, of which only the head is in
 *    flight;
 *  - SIGINT/SIGTERM are blocked and watched by a poll on a signalfd in the same ring.
 * Written against liburing 2.3 (Debian 12), which lacks io_uring_setup_buf_ring: the
 * buffer ring is mapped here and registered with io_uring_register_buf_ring.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Provided buffers: 4096 of 16 KiB (64 MiB of address space; a page becomes resident
 * only when the kernel first writes into it, so small messages touch one page per
 * buffer). 16 KiB, like weft's uring backend and echo_server's session buffer, lets
 * one completion and one send carry several pipelined messages; with 4 KiB buffers a
 * 4 KiB message, which arrives at any offset of the stream, usually takes two recv
 * completions and two sends (measured: ~40% fewer msgs/s at 64 x 4096 B x depth 16,
 * no difference at 64 B). A buffer is held only from its recv completion to its send
 * completion, normally one loop iteration, so 4096 cover far more than 4096
 * connections; when the ring does run dry, a recv ends with -ENOBUFS and is re-armed
 * once sends have returned buffers. A connection's FIFO has no limit of its own (the
 * multishot recv keeps filling it while the peer does not read), so the pool is the
 * bound: a peer that stops reading can starve the others until it reads again. The
 * benchmark's clients always read.
 */
enum {
    BUF_COUNT = 4096, /* a power of two, at most 32768 (buffer ids are 16 bits) */
    BUF_SIZE = 16384,
    BUF_GROUP = 0,
    SQ_ENTRIES = 4096,
    CQ_ENTRIES = 32768, /* room for a completion from each of 10,000 connections and more */
    BACKLOG = 4096,
};

#define NO_BUF 0xffffu

/* user_data: the operation in the low 8 bits, the connection slot above them. */
enum op { OP_ACCEPT, OP_ACCEPT_RETRY, OP_SIGNAL, OP_RECV, OP_SEND, OP_IGNORED };

static uint64_t tag(enum op op, uint32_t slot) { return (uint64_t)slot << 8 | (uint64_t)op; }

/* Connection state bits. A slot is reused only once nothing of it is in flight and it
 * is off the starved list, so a late completion can never reach the next connection
 * in that slot. */
enum {
    RECV_ARMED = 1, /* the multishot recv is in the kernel */
    SEND_BUSY = 2,  /* the FIFO head is being sent */
    STARVED = 4,    /* on the starved list: recv ended with -ENOBUFS */
    PEER_DONE = 8,  /* EOF: close once the FIFO is echoed */
    CLOSING = 16,   /* error: close once the kernel is done with the slot */
};

struct conn {
    int fd;          /* -1 when the slot is free */
    uint32_t sent;   /* bytes of the head buffer already sent */
    uint16_t head;   /* FIFO of received buffers, NO_BUF if empty */
    uint16_t tail;
    uint8_t state;
    int32_t link;    /* next slot on the free list or the starved list */
};

static struct io_uring ring;
static struct conn* conns;
static uint32_t conn_capacity;
static uint32_t conns_used; /* slots ever handed out; the free list recycles them */
static int32_t free_head = -1;
static int32_t starved_head = -1;

static char* pool;                  /* BUF_COUNT x BUF_SIZE */
static struct io_uring_buf_ring* br;
static size_t br_size;
static uint16_t buf_next[BUF_COUNT]; /* FIFO links through buffer ids */
static uint32_t buf_len[BUF_COUNT];  /* bytes received into each buffer */
static unsigned returns_pending;     /* buffers added to the ring, not yet published */
static unsigned bufs_free;           /* buffers the kernel can pick (published or not) */

static int listen_fd = -1;
static int signal_fd = -1;
static int running = 1;

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

static uint32_t fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur > (1u << 20)) return 1u << 20;
    return (uint32_t)rl.rlim_cur;
}

static int listen_loopback(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

/* An SQE; a full submission queue is handed to the kernel first (rare: the queue has
 * room for a send and a re-arm per connection that completed in one iteration). */
static struct io_uring_sqe* get_sqe(void) {
    struct io_uring_sqe* sqe;
    while ((sqe = io_uring_get_sqe(&ring)) == NULL) io_uring_submit(&ring);
    return sqe;
}

/* An operation whose success needs no handling; its failure CQE is ignored too. */
static struct io_uring_sqe* get_quiet_sqe(void) {
    struct io_uring_sqe* sqe = get_sqe();
    io_uring_sqe_set_data64(sqe, tag(OP_IGNORED, 0));
    return sqe;
}

/* ---- provided buffers ---------------------------------------------------------- */

static int setup_buffers(void) {
    pool = mmap(NULL, (size_t)BUF_COUNT * BUF_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pool == MAP_FAILED) return -ENOMEM;
    /* The ring must be page-aligned: mmap guarantees it. */
    br_size = (size_t)BUF_COUNT * sizeof(struct io_uring_buf);
    void* mem = mmap(NULL, br_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return -ENOMEM;
    br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = BUF_COUNT;
    reg.bgid = BUF_GROUP;
    int err = io_uring_register_buf_ring(&ring, &reg, 0);
    if (err < 0) return err;
    for (unsigned i = 0; i < BUF_COUNT; ++i)
        io_uring_buf_ring_add(br, pool + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(br, BUF_COUNT);
    bufs_free = BUF_COUNT;
    return 0;
}

/* Queues a buffer for the ring; publish_buffers() makes the batch visible at once. */
static void return_buffer(uint16_t bid) {
    io_uring_buf_ring_add(br, pool + (size_t)bid * BUF_SIZE, BUF_SIZE, bid, io_uring_buf_ring_mask(BUF_COUNT),
                          (int)returns_pending++);
    ++bufs_free;
}

static void publish_buffers(void) {
    if (returns_pending == 0) return;
    io_uring_buf_ring_advance(br, (int)returns_pending);
    returns_pending = 0;
}

/* ---- connections --------------------------------------------------------------- */

static int32_t alloc_slot(void) {
    if (free_head >= 0) {
        int32_t s = free_head;
        free_head = conns[s].link;
        return s;
    }
    /* Untouched slots stay untouched: calloc'd pages become resident only when used. */
    return conns_used < conn_capacity ? (int32_t)conns_used++ : -1;
}

static void arm_accept(void) {
    struct io_uring_sqe* sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag(OP_ACCEPT, 0));
}

static void arm_recv(uint32_t slot) {
    struct conn* c = &conns[slot];
    struct io_uring_sqe* sqe = get_sqe();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, tag(OP_RECV, slot));
    c->state |= RECV_ARMED;
}

/* Sends what is left of the FIFO head, straight from its provided buffer. */
static void start_send(uint32_t slot) {
    struct conn* c = &conns[slot];
    struct io_uring_sqe* sqe = get_sqe();
    io_uring_prep_send(sqe, c->fd, pool + (size_t)c->head * BUF_SIZE + c->sent, buf_len[c->head] - c->sent,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(OP_SEND, slot));
    c->state |= SEND_BUSY;
}

/* Closes the connection once the kernel holds nothing of it (no recv, no send) and it
 * has either failed or seen EOF with all its data echoed. The buffers it held go back
 * at once: a starved connection can be the one holding the buffers that every
 * starved connection waits for. Its slot, though, is still linked on the starved list
 * then, and is freed when rearm_starved() reaches it. */
static void finish(uint32_t slot) {
    struct conn* c = &conns[slot];
    if (!(c->state & CLOSING) && !((c->state & PEER_DONE) && c->head == NO_BUF)) return;
    while (c->head != NO_BUF) { /* unsent after an error: dropped */
        uint16_t bid = c->head;
        c->head = buf_next[bid];
        return_buffer(bid);
    }
    struct io_uring_sqe* sqe = get_quiet_sqe();
    io_uring_prep_close(sqe, c->fd);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    c->fd = -1;
    if (c->state & STARVED) {
        c->state = STARVED;
        return;
    }
    c->state = 0;
    c->link = free_head;
    free_head = (int32_t)slot;
}

/* Called after every completion, so the common case (an operation still in flight)
 * is kept inline: as one function, its register saves cost more than the test. */
static inline void maybe_finish(uint32_t slot) {
    if (!(conns[slot].state & (RECV_ARMED | SEND_BUSY))) finish(slot);
}

/* On an error: stop the recv (its final CQE, -ECANCELED, lets the slot finish). */
static void begin_close(uint32_t slot) {
    struct conn* c = &conns[slot];
    if (c->state & CLOSING) return;
    c->state |= CLOSING;
    if (c->state & RECV_ARMED) {
        struct io_uring_sqe* sqe = get_quiet_sqe();
        io_uring_prep_cancel64(sqe, tag(OP_RECV, slot), 0);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    }
}

static void on_accept(const struct io_uring_cqe* cqe) {
    if (cqe->res >= 0) {
        int fd = cqe->res;
        int32_t slot = alloc_slot();
        if (slot < 0) { /* cannot happen below the fd limit */
            close(fd);
        } else {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            struct conn* c = &conns[slot];
            c->fd = fd;
            c->sent = 0;
            c->head = c->tail = NO_BUF;
            c->state = 0;
            arm_recv((uint32_t)slot);
        }
    }
    if (cqe->flags & IORING_CQE_F_MORE) return;
    if (cqe->res >= 0) {
        arm_accept();
    } else {
        /* An error ends the multishot accept. EMFILE/ENFILE/ENOMEM would recur at once,
         * so accepting pauses for a millisecond (a timeout in the ring, not a busy
         * loop) while established connections keep being served; any other error is
         * rare enough to take the same path. */
        static struct __kernel_timespec accept_pause = {.tv_sec = 0, .tv_nsec = 1000000};
        struct io_uring_sqe* sqe = get_sqe();
        io_uring_prep_timeout(sqe, &accept_pause, 0, 0);
        io_uring_sqe_set_data64(sqe, tag(OP_ACCEPT_RETRY, 0));
    }
}

static void on_recv(uint32_t slot, const struct io_uring_cqe* cqe) {
    struct conn* c = &conns[slot];
    if (!(cqe->flags & IORING_CQE_F_MORE)) c->state &= (uint8_t)~RECV_ARMED;
    if (cqe->res > 0) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        --bufs_free;
        if (c->state & CLOSING) {
            return_buffer(bid);
        } else {
            buf_len[bid] = (uint32_t)cqe->res;
            buf_next[bid] = NO_BUF;
            if (c->head == NO_BUF) c->head = bid;
            else buf_next[c->tail] = bid;
            c->tail = bid;
            if (!(c->state & SEND_BUSY)) start_send(slot);
            /* The kernel may end a multishot recv after data (e.g. CQ overflow). */
            if (!(c->state & RECV_ARMED)) arm_recv(slot);
        }
    } else if (cqe->res == 0) {
        c->state |= PEER_DONE;
    } else if (cqe->res == -ENOBUFS && !(c->state & CLOSING)) {
        /* The ring ran dry: re-armed by rearm_starved() once buffers are back. */
        c->state |= STARVED;
        c->link = starved_head;
        starved_head = (int32_t)slot;
    } else {
        begin_close(slot); /* ECONNRESET and friends, or our cancellation */
    }
    maybe_finish(slot);
}

static void on_send(uint32_t slot, const struct io_uring_cqe* cqe) {
    struct conn* c = &conns[slot];
    c->state &= (uint8_t)~SEND_BUSY;
    if (cqe->res <= 0) {
        begin_close(slot); /* EPIPE, ECONNRESET...; 0 cannot happen for a non-empty send */
    } else if (!(c->state & CLOSING)) {
        c->sent += (uint32_t)cqe->res;
        if (c->sent < buf_len[c->head]) {
            start_send(slot); /* short send: the rest, before anything queued behind it */
        } else {
            uint16_t bid = c->head;
            c->head = buf_next[bid];
            if (c->head == NO_BUF) c->tail = NO_BUF;
            c->sent = 0;
            return_buffer(bid);
            if (c->head != NO_BUF) start_send(slot);
        }
    }
    maybe_finish(slot);
}

/* Re-arms recvs that found the ring empty, at most one per free buffer: each will
 * take at least one, and arming more would only collect more -ENOBUFS. */
static void rearm_starved(void) {
    unsigned budget = bufs_free;
    while (starved_head >= 0 && budget > 0) {
        uint32_t slot = (uint32_t)starved_head;
        struct conn* c = &conns[slot];
        starved_head = c->link;
        c->state &= (uint8_t)~STARVED;
        if (c->fd < 0) { /* closed while it waited: the slot is free now */
            c->link = free_head;
            free_head = (int32_t)slot;
        } else if (!(c->state & CLOSING)) {
            arm_recv(slot);
            --budget;
        }
        /* else a send is still in flight; its completion finishes the connection. */
    }
}

static void dispatch(const struct io_uring_cqe* cqe) {
    uint64_t data = io_uring_cqe_get_data64(cqe);
    uint32_t slot = (uint32_t)(data >> 8);
    switch ((enum op)(data & 0xff)) {
    case OP_ACCEPT:
        on_accept(cqe);
        break;
    case OP_ACCEPT_RETRY:
        arm_accept();
        break;
    case OP_SIGNAL:
        running = 0;
        break;
    case OP_RECV:
        on_recv(slot, cqe);
        break;
    case OP_SEND:
        on_send(slot, cqe);
        break;
    case OP_IGNORED:
        break;
    }
}

/* SINGLE_ISSUER|DEFER_TASKRUN runs completion work only inside our own
 * io_uring_enter, never by interrupting the loop; older kernels get the nearest thing. */
static int setup_ring(void) {
    static const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int err = -EINVAL;
    for (size_t i = 0; i < sizeof flag_sets / sizeof flag_sets[0] && err == -EINVAL; ++i) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = CQ_ENTRIES;
        err = io_uring_queue_init_params(SQ_ENTRIES, &ring, &p);
    }
    if (err < 0) return err;
    io_uring_register_ring_fd(&ring); /* cheaper io_uring_enter; optional */
    return 0;
}

int main(int argc, char** argv) {
    uint16_t port = parse_port(argc, argv);
    raise_fd_limit();
    conn_capacity = fd_limit();
    conns = calloc(conn_capacity, sizeof *conns);
    if (conns == NULL) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }

    /* SIGINT/SIGTERM are blocked and watched through a signalfd polled by the ring. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &stop_signals, NULL) != 0) {
        perror("error: sigprocmask");
        return 1;
    }
    signal_fd = signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
    if (signal_fd < 0) {
        perror("error: signalfd");
        return 1;
    }

    int err = setup_ring();
    if (err < 0) {
        fprintf(stderr, "error: io_uring_queue_init: %s\n", strerror(-err));
        return 1;
    }
    err = setup_buffers();
    if (err < 0) {
        fprintf(stderr, "error: provided buffer ring: %s\n", strerror(-err));
        return 1;
    }

    listen_fd = listen_loopback(port);
    if (listen_fd < 0) {
        fprintf(stderr, "error: listen on 127.0.0.1:%u: %s\n", port, strerror(errno));
        return 1;
    }
    struct sockaddr_in bound;
    socklen_t bound_len = sizeof bound;
    if (getsockname(listen_fd, (struct sockaddr*)&bound, &bound_len) != 0) {
        perror("error: getsockname");
        return 1;
    }
    printf("port %u\n", ntohs(bound.sin_port));
    fflush(stdout);

    arm_accept();
    struct io_uring_sqe* sqe = get_sqe();
    io_uring_prep_poll_add(sqe, signal_fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag(OP_SIGNAL, 0));

    int status = 0;
    while (running) {
        rearm_starved();
        publish_buffers();
        int r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            fprintf(stderr, "error: io_uring_submit_and_wait: %s\n", strerror(-r));
            status = 1;
            break;
        }
        unsigned head, seen = 0;
        struct io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring, head, cqe) {
            dispatch(cqe);
            ++seen;
        }
        io_uring_cq_advance(&ring, seen);
    }

    /* Queued closes run now; connections still open are closed directly, and tearing
     * the ring down cancels their recvs and sends. */
    io_uring_submit(&ring);
    for (uint32_t s = 0; s < conns_used; ++s)
        if (conns[s].fd >= 0) close(conns[s].fd);
    io_uring_queue_exit(&ring);
    munmap(br, br_size);
    munmap(pool, (size_t)BUF_COUNT * BUF_SIZE);
    free(conns);
    close(listen_fd);
    close(signal_fd);
    return status;
}
