/*
 * loadgen: an ONC RPC (RFC 5531) load generator for loopback servers.
 *
 * One thread, one socket.  A window of calls is kept outstanding; every
 * reply is matched to its call by xid and verified (MSG_ACCEPTED, SUCCESS,
 * and for NFSv3 calls nfsstat3 == NFS3_OK).  Failures are counted by kind,
 * never fatal.  UDP uses sendmmsg/recvmmsg; TCP uses record marking and
 * writes a batch of calls per write, parsing every reply a read returns.
 *
 * Call kinds: NULL of any program/version, and NFSv3 GETATTR, READLINK and
 * LOOKUP.  NFS calls use a filehandle given in hex, or handles obtained in a
 * setup phase: MOUNT v3 MNT of an export path, then one LOOKUP of a name per
 * caller uid (the server may hand each uid its own handle).
 *
 * Output: human text on stderr, one JSON line on stdout.
 *
 * Build: gcc -O2 -Wall -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SLOT_BITS 12
#define MAX_WINDOW (1u << SLOT_BITS)
#define MAX_MSG 1024            /* largest call we build */
#define UDP_BATCH 64
#define UDP_RBUF 9000
#define TCP_RBUF (1u << 20)
#define MAX_FH 64

#define PROG_NFS 100003
#define PROG_MOUNT 100005
#define NFSPROC3_GETATTR 1
#define NFSPROC3_LOOKUP 3
#define NFSPROC3_READLINK 5
#define MOUNTPROC3_MNT 1

enum kind { K_NULL, K_GETATTR, K_READLINK, K_LOOKUP, K_MNT };
static const char *kind_names[] = {"null", "getattr", "readlink", "lookup", "mnt"};

/* How a reply fared; indexes into stats.by_result. */
enum result {
    RES_OK,
    RES_PROG_UNAVAIL,     /* accept_stat 1 */
    RES_PROG_MISMATCH,    /* 2 */
    RES_PROC_UNAVAIL,     /* 3 */
    RES_GARBAGE_ARGS,     /* 4 */
    RES_SYSTEM_ERR,       /* 5 */
    RES_ACCEPT_OTHER,     /* any other accept_stat */
    RES_DENIED,           /* MSG_DENIED: RPC_MISMATCH or AUTH_ERROR */
    RES_NFS_ERR,          /* accepted, SUCCESS, nfsstat3 != NFS3_OK */
    RES_MALFORMED,        /* too short, not a reply, truncated datagram */
    RES_COUNT
};
static const char *result_names[] = {
    "ok", "prog_unavail", "prog_mismatch", "proc_unavail", "garbage_args",
    "system_err", "accept_other", "denied", "nfs_error", "malformed"};

struct slot {
    uint32_t xid;
    uint32_t uidx;
    uint64_t sent_ns;
    int busy;
};

struct stats {
    uint64_t sent;
    uint64_t replies;           /* matched replies */
    uint64_t by_result[RES_COUNT];
    uint64_t unmatched;         /* xid of no outstanding call */
    uint64_t timeouts;
    uint64_t *lat_ns;
    size_t nlat, caplat;
    uint64_t first_send_ns, last_reply_ns;
};

struct config {
    const char *host;
    int port, mount_port;
    int tcp;
    unsigned window;
    double duration, warmup;
    uint64_t calls;
    enum kind kind;
    uint32_t prog, vers, proc;
    int auth_unix;
    uint32_t uid_lo, uid_hi, gid;
    const char *fh_hex;
    const char *export_path;
    const char *name;
    int server_pid;
    int timeout_ms;
    int quiet;
};

/* Per-uid encoded call without its xid (bytes 0..3 are patched). */
struct tmpl {
    uint8_t *buf;
    uint32_t len;
};

struct phase {
    struct tmpl *tmpls;         /* one per uid index */
    uint32_t ntmpl;
    uint64_t max_calls;         /* 0: no limit */
    double duration;            /* 0: no limit */
    int nfs_status;             /* check nfsstat3 in the result */
    int keep_latency;
    /* Called with the result body (after accept_stat) of each SUCCESS reply. */
    void (*on_result)(uint32_t uidx, const uint8_t *res, size_t len);
};

static struct config cfg;
static int sock = -1;
static struct slot slots[MAX_WINDOW];
static uint32_t xid_gen[MAX_WINDOW];
static uint32_t xid_salt;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- XDR encoding ---- */

struct enc {
    uint8_t *p, *end;
};

static void put32(struct enc *e, uint32_t v)
{
    if (e->end - e->p < 4)
        die("call too large");
    v = htonl(v);
    memcpy(e->p, &v, 4);
    e->p += 4;
}

static void put_opaque(struct enc *e, const void *data, uint32_t len)
{
    uint32_t padded = (len + 3) & ~3u;
    put32(e, len);
    if ((uint32_t)(e->end - e->p) < padded)
        die("call too large");
    memcpy(e->p, data, len);
    memset(e->p + len, 0, padded - len);
    e->p += padded;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

/*
 * Encode a call message (RFC 5531 section 9) with xid 0 and the given
 * argument bytes into a fresh template.
 */
static struct tmpl make_call(uint32_t prog, uint32_t vers, uint32_t proc,
                             uint32_t uid, const void *args, uint32_t argslen)
{
    uint8_t buf[MAX_MSG];
    struct enc e = {buf, buf + sizeof buf};
    put32(&e, 0);               /* xid, patched per call */
    put32(&e, 0);               /* CALL */
    put32(&e, 2);               /* rpcvers */
    put32(&e, prog);
    put32(&e, vers);
    put32(&e, proc);
    if (cfg.auth_unix) {
        uint8_t cred[128];
        struct enc c = {cred, cred + sizeof cred};
        static const char machine[] = "loadgen";
        put32(&c, 0);           /* stamp */
        put_opaque(&c, machine, sizeof machine - 1);
        put32(&c, uid);
        put32(&c, cfg.gid);
        put32(&c, 0);           /* no supplementary gids */
        put32(&e, 1);           /* AUTH_UNIX */
        put_opaque(&e, cred, (uint32_t)(c.p - cred));
    } else {
        put32(&e, 0);           /* AUTH_NONE */
        put32(&e, 0);
    }
    put32(&e, 0);               /* verifier: AUTH_NONE */
    put32(&e, 0);
    if ((size_t)(e.end - e.p) < argslen)
        die("call too large");
    memcpy(e.p, args, argslen);
    e.p += argslen;
    struct tmpl t;
    t.len = (uint32_t)(e.p - buf);
    t.buf = malloc(t.len);
    if (!t.buf)
        die("out of memory");
    memcpy(t.buf, buf, t.len);
    return t;
}

/* ---- reply verification ---- */

/*
 * Classify one reply message.  On success res and reslen point at the
 * procedure's result (after accept_stat).
 */
static enum result check_reply(const uint8_t *m, size_t n, int nfs_status,
                               const uint8_t **res, size_t *reslen)
{
    if (n < 12 || get32(m + 4) != 1)
        return RES_MALFORMED;
    if (get32(m + 8) != 0)
        return get32(m + 8) == 1 ? RES_DENIED : RES_MALFORMED;
    if (n < 20)
        return RES_MALFORMED;
    uint32_t vlen = get32(m + 16);
    if (vlen > 400)
        return RES_MALFORMED;
    size_t off = 20 + ((vlen + 3) & ~3u);
    if (n < off + 4)
        return RES_MALFORMED;
    uint32_t stat = get32(m + off);
    off += 4;
    if (stat != 0)
        return stat <= 5 ? (enum result)stat : RES_ACCEPT_OTHER;
    if (nfs_status) {
        if (n < off + 4)
            return RES_MALFORMED;
        if (get32(m + off) != 0)
            return RES_NFS_ERR;
    }
    *res = m + off;
    *reslen = n - off;
    return RES_OK;
}

/* ---- the engine ---- */

static struct stats *cur_stats;
static const struct phase *cur_phase;
static uint64_t batch_now;

static void stats_latency(struct stats *st, uint64_t ns)
{
    if (st->nlat == st->caplat) {
        st->caplat = st->caplat ? st->caplat * 2 : 1 << 16;
        st->lat_ns = realloc(st->lat_ns, st->caplat * sizeof *st->lat_ns);
        if (!st->lat_ns)
            die("out of memory");
    }
    st->lat_ns[st->nlat++] = ns;
}

static unsigned outstanding;

static void handle_reply(const uint8_t *m, size_t n)
{
    struct stats *st = cur_stats;
    if (n < 4) {
        st->by_result[RES_MALFORMED]++;
        return;
    }
    uint32_t xid = get32(m);
    uint32_t s = xid & (MAX_WINDOW - 1);
    if (s >= cfg.window || !slots[s].busy || slots[s].xid != xid) {
        st->unmatched++;
        return;
    }
    slots[s].busy = 0;
    outstanding--;
    st->replies++;
    st->last_reply_ns = batch_now;
    const uint8_t *res = NULL;
    size_t reslen = 0;
    enum result r = check_reply(m, n, cur_phase->nfs_status, &res, &reslen);
    st->by_result[r]++;
    if (cur_phase->keep_latency)
        stats_latency(st, batch_now - slots[s].sent_ns);
    if (r == RES_OK && cur_phase->on_result)
        cur_phase->on_result(slots[s].uidx, res, reslen);
}

static uint8_t *obuf;           /* batch of encoded calls */
static size_t olen;
static struct iovec oiov[MAX_WINDOW];
static unsigned oniov;

/* Encode the next call into slot s and append it to the output batch. */
static void queue_call(unsigned s)
{
    const struct phase *ph = cur_phase;
    struct stats *st = cur_stats;
    uint32_t uidx = (uint32_t)(st->sent % ph->ntmpl);
    const struct tmpl *t = &ph->tmpls[uidx];
    uint32_t xid = ((++xid_gen[s] ^ xid_salt) << SLOT_BITS) | s;
    uint8_t *p = obuf + olen;
    if (cfg.tcp) {
        uint32_t mark = htonl(0x80000000u | t->len);
        memcpy(p, &mark, 4);
        p += 4;
    }
    memcpy(p, t->buf, t->len);
    uint32_t nx = htonl(xid);
    memcpy(p, &nx, 4);
    oiov[oniov].iov_base = p;
    oiov[oniov].iov_len = t->len;
    oniov++;
    olen = (size_t)(p + t->len - obuf);
    slots[s] = (struct slot){xid, uidx, batch_now, 1};
    outstanding++;
    if (st->sent++ == 0)
        st->first_send_ns = batch_now;
}

static void flush_calls(void)
{
    if (oniov == 0)
        return;
    if (cfg.tcp) {
        size_t done = 0;
        while (done < olen) {
            ssize_t w = send(sock, obuf + done, olen - done, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN) {
                    struct pollfd pf = {sock, POLLOUT, 0};
                    poll(&pf, 1, 100);
                    continue;
                }
                die("send: %s", strerror(errno));
            }
            done += (size_t)w;
        }
    } else {
        struct mmsghdr mm[UDP_BATCH];
        unsigned i = 0;
        while (i < oniov) {
            unsigned k, n = oniov - i < UDP_BATCH ? oniov - i : UDP_BATCH;
            for (k = 0; k < n; k++) {
                memset(&mm[k], 0, sizeof mm[k]);
                mm[k].msg_hdr.msg_iov = &oiov[i + k];
                mm[k].msg_hdr.msg_iovlen = 1;
            }
            int r = sendmmsg(sock, mm, n, 0);
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN || errno == ENOBUFS) {
                    struct pollfd pf = {sock, POLLOUT, 0};
                    poll(&pf, 1, 10);
                    continue;
                }
                if (errno == ECONNREFUSED) {
                    /* An earlier datagram met a closed port; the calls in
                     * flight will time out and be counted. */
                    i += n;
                    continue;
                }
                die("sendmmsg: %s", strerror(errno));
            }
            i += (unsigned)r;
        }
    }
    olen = 0;
    oniov = 0;
}

static uint8_t *tcp_rbuf, *frag_buf;
static size_t tcp_rlen, frag_len, frag_cap;

/* Parse every complete record in the TCP receive buffer. */
static void tcp_parse(void)
{
    size_t pos = 0;
    while (tcp_rlen - pos >= 4) {
        uint32_t mark = get32(tcp_rbuf + pos);
        uint32_t flen = mark & 0x7fffffffu;
        int last = (mark >> 31) != 0;
        if (flen > TCP_RBUF - 4)
            die("reply fragment of %u bytes: not an RPC server?", flen);
        if (tcp_rlen - pos - 4 < flen)
            break;
        const uint8_t *f = tcp_rbuf + pos + 4;
        if (last && frag_len == 0) {
            handle_reply(f, flen);
        } else {
            if (frag_len + flen > frag_cap) {
                frag_cap = (frag_len + flen) * 2;
                frag_buf = realloc(frag_buf, frag_cap);
                if (!frag_buf)
                    die("out of memory");
            }
            memcpy(frag_buf + frag_len, f, flen);
            frag_len += flen;
            if (last) {
                handle_reply(frag_buf, frag_len);
                frag_len = 0;
            }
        }
        pos += 4 + flen;
    }
    memmove(tcp_rbuf, tcp_rbuf + pos, tcp_rlen - pos);
    tcp_rlen -= pos;
}

/* Read whatever has arrived without blocking; returns the number of reads
 * that returned data (0: nothing waiting). */
static int receive(void)
{
    if (cfg.tcp) {
        ssize_t r = recv(sock, tcp_rbuf + tcp_rlen, TCP_RBUF - tcp_rlen, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            die("recv: %s", strerror(errno));
        }
        if (r == 0)
            die("server closed the connection");
        batch_now = now_ns();
        tcp_rlen += (size_t)r;
        tcp_parse();
        return 1;
    }
    static uint8_t bufs[UDP_BATCH][UDP_RBUF];
    struct mmsghdr mm[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    for (unsigned k = 0; k < UDP_BATCH; k++) {
        iov[k].iov_base = bufs[k];
        iov[k].iov_len = UDP_RBUF;
        memset(&mm[k], 0, sizeof mm[k]);
        mm[k].msg_hdr.msg_iov = &iov[k];
        mm[k].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(sock, mm, UDP_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED)
            return 0;
        die("recvmmsg: %s", strerror(errno));
    }
    batch_now = now_ns();
    for (int k = 0; k < n; k++) {
        if (mm[k].msg_hdr.msg_flags & MSG_TRUNC) {
            cur_stats->by_result[RES_MALFORMED]++;
            continue;
        }
        handle_reply(bufs[k], mm[k].msg_len);
    }
    return n > 0;
}

static void expire(uint64_t now)
{
    uint64_t limit = (uint64_t)cfg.timeout_ms * 1000000u;
    for (unsigned s = 0; s < cfg.window; s++) {
        if (slots[s].busy && now - slots[s].sent_ns > limit) {
            slots[s].busy = 0;
            outstanding--;
            cur_stats->timeouts++;
        }
    }
}

/* Run one phase to completion: send until the limit, then drain. */
static void run_phase(const struct phase *ph, struct stats *st)
{
    cur_phase = ph;
    cur_stats = st;
    memset(slots, 0, sizeof slots);
    outstanding = 0;
    tcp_rlen = frag_len = 0;
    batch_now = now_ns();
    uint64_t deadline = ph->duration > 0 ? batch_now + (uint64_t)(ph->duration * 1e9) : 0;
    uint64_t next_expire = batch_now + 100000000u;
    int sending = 1;
    for (;;) {
        if (sending) {
            if ((ph->max_calls && st->sent >= ph->max_calls) ||
                (deadline && batch_now >= deadline))
                sending = 0;
        }
        if (sending) {
            for (unsigned s = 0; s < cfg.window; s++) {
                if (!slots[s].busy) {
                    if (ph->max_calls && st->sent >= ph->max_calls)
                        break;
                    queue_call(s);
                }
            }
            flush_calls();
        }
        if (!sending && outstanding == 0)
            break;
        if (!receive()) {
            uint64_t now = now_ns();
            int wait_ms = 100;
            if (sending && deadline) {
                int64_t left = (int64_t)(deadline - now) / 1000000;
                if (left < wait_ms)
                    wait_ms = left < 1 ? 1 : (int)left;
            }
            struct pollfd pf = {sock, POLLIN, 0};
            poll(&pf, 1, wait_ms);
            batch_now = now_ns();
        }
        if (batch_now >= next_expire) {
            expire(batch_now);
            next_expire = batch_now + 100000000u;
        }
    }
    if (st->last_reply_ns < st->first_send_ns)
        st->last_reply_ns = st->first_send_ns;
}

/* ---- setup: MNT, then LOOKUP per uid ---- */

static uint8_t root_fh[MAX_FH];
static uint32_t root_fh_len;
static uint8_t (*uid_fh)[MAX_FH];
static uint32_t *uid_fh_len;

static void take_fh(const uint8_t *p, size_t n, uint8_t *fh, uint32_t *fhlen)
{
    if (n < 4)
        return;
    uint32_t len = get32(p);
    if (len > MAX_FH || n < 4 + len)
        return;
    memcpy(fh, p + 4, len);
    *fhlen = len;
}

static void on_mnt(uint32_t uidx, const uint8_t *res, size_t len)
{
    (void)uidx;
    /* mountstat3, then fhandle3 */
    if (len >= 4 && get32(res) == 0)
        take_fh(res + 4, len - 4, root_fh, &root_fh_len);
}

static void on_lookup(uint32_t uidx, const uint8_t *res, size_t len)
{
    /* nfsstat3 (already checked OK), then the object's nfs_fh3 */
    take_fh(res + 4, len - 4, uid_fh[uidx], &uid_fh_len[uidx]);
}

static uint32_t nuids(void)
{
    return cfg.uid_hi - cfg.uid_lo + 1;
}

static struct tmpl *alloc_tmpls(void)
{
    struct tmpl *t = calloc(nuids(), sizeof *t);
    if (!t)
        die("out of memory");
    return t;
}

static uint32_t encode_fh(uint8_t *out, const uint8_t *fh, uint32_t len)
{
    struct enc e = {out, out + MAX_MSG};
    put_opaque(&e, fh, len);
    return (uint32_t)(e.p - out);
}

static uint32_t encode_diropargs(uint8_t *out, const uint8_t *fh, uint32_t len, const char *name)
{
    struct enc e = {out, out + MAX_MSG};
    put_opaque(&e, fh, len);
    put_opaque(&e, name, (uint32_t)strlen(name));
    return (uint32_t)(e.p - out);
}

static void setup_phase(struct tmpl *t, uint32_t n, uint64_t calls, int nfs_status,
                        void (*on_result)(uint32_t, const uint8_t *, size_t),
                        const char *what)
{
    struct phase ph = {t, n, calls, 0, nfs_status, 0, on_result};
    struct stats st;
    memset(&st, 0, sizeof st);
    run_phase(&ph, &st);
    if (st.by_result[RES_OK] != calls) {
        const char *why = "no reply";
        for (int r = 1; r < RES_COUNT; r++)
            if (st.by_result[r])
                why = result_names[r];
        die("setup: %s: %llu of %llu calls failed (%s)", what,
            (unsigned long long)(calls - st.by_result[RES_OK]),
            (unsigned long long)calls, why);
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static uint32_t parse_hex(const char *s, uint8_t *out)
{
    size_t n = strlen(s);
    if (n % 2 || n / 2 > MAX_FH || n == 0)
        die("--fh: want 1 to %d bytes of hex, got %s", MAX_FH, s);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            die("--fh: not hex: %s", s);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (uint32_t)(n / 2);
}

/* Build the measured phase's templates, running setup calls if needed. */
static struct tmpl *prepare(void)
{
    uint32_t n = nuids();
    struct tmpl *t = alloc_tmpls();
    uint8_t args[MAX_MSG];
    if (cfg.kind == K_NULL) {
        for (uint32_t i = 0; i < n; i++)
            t[i] = make_call(cfg.prog, cfg.vers, cfg.proc, cfg.uid_lo + i, NULL, 0);
        return t;
    }
    uid_fh = calloc(n, sizeof *uid_fh);
    uid_fh_len = calloc(n, sizeof *uid_fh_len);
    if (!uid_fh || !uid_fh_len)
        die("out of memory");
    if (cfg.fh_hex) {
        uint32_t len = parse_hex(cfg.fh_hex, root_fh);
        root_fh_len = len;
        for (uint32_t i = 0; i < n; i++) {
            memcpy(uid_fh[i], root_fh, len);
            uid_fh_len[i] = len;
        }
    } else {
        /* MNT is addressed to the mount port; a different port would need a
         * second socket, so it must be the same server port here. */
        struct enc e = {args, args + sizeof args};
        put_opaque(&e, cfg.export_path, (uint32_t)strlen(cfg.export_path));
        struct tmpl mnt = make_call(PROG_MOUNT, 3, MOUNTPROC3_MNT, cfg.uid_lo, args, (uint32_t)(e.p - args));
        setup_phase(&mnt, 1, 1, 0, on_mnt, "MOUNT v3 MNT");
        if (root_fh_len == 0)
            die("setup: MNT %s did not return a filehandle", cfg.export_path);
        if (cfg.kind != K_LOOKUP) {
            struct tmpl *lk = alloc_tmpls();
            uint32_t alen = encode_diropargs(args, root_fh, root_fh_len, cfg.name);
            for (uint32_t i = 0; i < n; i++)
                lk[i] = make_call(PROG_NFS, 3, NFSPROC3_LOOKUP, cfg.uid_lo + i, args, alen);
            setup_phase(lk, n, n, 1, on_lookup, "NFSv3 LOOKUP per uid");
            for (uint32_t i = 0; i < n; i++) {
                free(lk[i].buf);
                if (uid_fh_len[i] == 0)
                    die("setup: LOOKUP %s for uid %u returned no handle", cfg.name, cfg.uid_lo + i);
            }
            free(lk);
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t alen, proc;
        if (cfg.kind == K_LOOKUP) {
            proc = NFSPROC3_LOOKUP;
            alen = encode_diropargs(args, root_fh, root_fh_len, cfg.name);
        } else {
            proc = cfg.kind == K_GETATTR ? NFSPROC3_GETATTR : NFSPROC3_READLINK;
            alen = encode_fh(args, uid_fh[i], uid_fh_len[i]);
        }
        t[i] = make_call(PROG_NFS, 3, proc, cfg.uid_lo + i, args, alen);
    }
    return t;
}

/* ---- reporting ---- */

static int read_stat_ticks(int pid, uint64_t *own, uint64_t *reaped)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut, st, cut, cst;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime(14) stime(15) cutime(16) cstime(17) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld",
               &ut, &st, &cut, &cst) != 4)
        return -1;
    *own = ut + st;
    *reaped = cut + cst;
    return 0;
}

/* Add the CPU of process PID and of every process under it (-1 if PID
 * itself cannot be read): hlfs's home checks run in its grandchildren
 * (forked by a forker child).  Each one's own time and its reaped
 * children's, so that a process ending moves its time to its parent, not
 * loses it. */
static int add_tree_ticks(int pid, uint64_t *ticks, int depth)
{
    uint64_t own, reaped;
    if (read_stat_ticks(pid, &own, &reaped) != 0)
        return -1;
    *ticks += own + reaped;
    if (depth >= 8)
        return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *tasks = opendir(path);
    if (!tasks)
        return 0;
    struct dirent *e;
    while ((e = readdir(tasks)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char cpath[320];
        snprintf(cpath, sizeof cpath, "/proc/%d/task/%s/children", pid, e->d_name);
        FILE *f = fopen(cpath, "r");
        if (!f)
            continue;
        int child;
        while (fscanf(f, "%d", &child) == 1)
            add_tree_ticks(child, ticks, depth + 1);  /* a child gone meanwhile adds nothing */
        fclose(f);
    }
    closedir(tasks);
    return 0;
}

/* The server's CPU and that of every process under it; -1 if the server
 * itself cannot be read. */
static int read_cpu_ticks(int pid, uint64_t *ticks)
{
    *ticks = 0;
    return add_tree_ticks(pid, ticks, 0);
}

static double own_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i] / 1000.0;
}

static void usage(FILE *f)
{
    fputs(
        "usage: loadgen [options]\n"
        "  --host ADDR          server address, loopback only (127.0.0.1)\n"
        "  --port N             server port (111)\n"
        "  --proto udp|tcp      transport (udp)\n"
        "  --window N           calls kept outstanding, 1..4096 (32)\n"
        "  --duration SECS      measure for this long (5)\n"
        "  --calls N            or: send exactly N calls\n"
        "  --warmup SECS        unmeasured traffic before measuring (0)\n"
        "  --call KIND          null | getattr | readlink | lookup (null)\n"
        "  --prog P --vers V --proc N   program for null (100000 2 0)\n"
        "  --auth none|unix     credential flavour (none; unix for NFS calls)\n"
        "  --uid N | --uids A-B caller uid(s), rotated per call (0)\n"
        "  --gid N              caller gid (100)\n"
        "  --fh HEX             NFS filehandle to use instead of MNT+LOOKUP\n"
        "  --export PATH        MNT this path to get the root handle (/mail)\n"
        "  --name NAME          LOOKUP this name in the root (home)\n"
        "  --timeout-ms N       count a call lost after this long (2000)\n"
        "  --server-pid PID     report this process's CPU time during the run\n"
        "  --quiet              no human text on stderr\n",
        f);
}

static unsigned long parse_num(const char *opt, const char *s, unsigned long lo, unsigned long hi)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || *end || end == s || v < lo || v > hi || s[0] == '-')
        die("%s: want an integer in %lu..%lu, got %s", opt, lo, hi, s);
    return v;
}

static double parse_secs(const char *opt, const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s || !(v >= 0) || v > 86400)
        die("%s: want seconds, got %s", opt, s);
    return v;
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"proto", 1, 0, 'P'},
        {"window", 1, 0, 'w'}, {"duration", 1, 0, 'd'}, {"calls", 1, 0, 'n'},
        {"warmup", 1, 0, 'W'}, {"call", 1, 0, 'c'}, {"prog", 1, 0, 'g'},
        {"vers", 1, 0, 'v'}, {"proc", 1, 0, 'r'}, {"auth", 1, 0, 'a'},
        {"uid", 1, 0, 'u'}, {"uids", 1, 0, 'U'}, {"gid", 1, 0, 'G'},
        {"fh", 1, 0, 'f'}, {"export", 1, 0, 'e'}, {"name", 1, 0, 'N'},
        {"timeout-ms", 1, 0, 't'}, {"server-pid", 1, 0, 's'},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int auth_set = 0, prog_set = 0;
    cfg = (struct config){
        .host = "127.0.0.1", .port = 111, .window = 32, .duration = 5,
        .kind = K_NULL, .prog = 100000, .vers = 2, .proc = 0, .gid = 100,
        .export_path = "/mail", .name = "home", .timeout_ms = 2000};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'H': cfg.host = optarg; break;
        case 'p': cfg.port = (int)parse_num("--port", optarg, 1, 65535); break;
        case 'P':
            if (!strcmp(optarg, "udp")) cfg.tcp = 0;
            else if (!strcmp(optarg, "tcp")) cfg.tcp = 1;
            else die("--proto: want udp or tcp, got %s", optarg);
            break;
        case 'w': cfg.window = (unsigned)parse_num("--window", optarg, 1, MAX_WINDOW); break;
        case 'd': cfg.duration = parse_secs("--duration", optarg); cfg.calls = 0; break;
        case 'n': cfg.calls = parse_num("--calls", optarg, 1, 1ul << 40); cfg.duration = 0; break;
        case 'W': cfg.warmup = parse_secs("--warmup", optarg); break;
        case 'c': {
            int k;
            for (k = 0; k < K_MNT; k++)
                if (!strcmp(optarg, kind_names[k]))
                    break;
            if (k == K_MNT)
                die("--call: want null, getattr, readlink or lookup, got %s", optarg);
            cfg.kind = (enum kind)k;
            break;
        }
        case 'g': cfg.prog = (uint32_t)parse_num("--prog", optarg, 0, 0xffffffffu); prog_set = 1; break;
        case 'v': cfg.vers = (uint32_t)parse_num("--vers", optarg, 0, 0xffffffffu); prog_set = 1; break;
        case 'r': cfg.proc = (uint32_t)parse_num("--proc", optarg, 0, 0xffffffffu); prog_set = 1; break;
        case 'a':
            if (!strcmp(optarg, "none")) cfg.auth_unix = 0;
            else if (!strcmp(optarg, "unix")) cfg.auth_unix = 1;
            else die("--auth: want none or unix, got %s", optarg);
            auth_set = 1;
            break;
        case 'u':
            cfg.uid_lo = cfg.uid_hi = (uint32_t)parse_num("--uid", optarg, 0, 0xffffffffu);
            break;
        case 'U': {
            char *dash = strchr(optarg, '-');
            if (!dash)
                die("--uids: want A-B, got %s", optarg);
            *dash = 0;
            cfg.uid_lo = (uint32_t)parse_num("--uids", optarg, 0, 0xffffffffu);
            cfg.uid_hi = (uint32_t)parse_num("--uids", dash + 1, 0, 0xffffffffu);
            *dash = '-';
            if (cfg.uid_hi < cfg.uid_lo || cfg.uid_hi - cfg.uid_lo >= 10000000)
                die("--uids: want A-B with A <= B and at most 10000000 uids, got %s", optarg);
            break;
        }
        case 'G': cfg.gid = (uint32_t)parse_num("--gid", optarg, 0, 0xffffffffu); break;
        case 'f': cfg.fh_hex = optarg; break;
        case 'e': cfg.export_path = optarg; break;
        case 'N': cfg.name = optarg; break;
        case 't': cfg.timeout_ms = (int)parse_num("--timeout-ms", optarg, 1, 3600000); break;
        case 's': cfg.server_pid = (int)parse_num("--server-pid", optarg, 1, 1 << 30); break;
        case 'q': cfg.quiet = 1; break;
        case 'h': usage(stdout); exit(0);
        case ':': die("%s needs a value (see --help)", argv[optind - 1]);
        default: die("unknown option %s (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        die("unexpected argument %s", argv[optind]);
    if (cfg.kind != K_NULL) {
        if (prog_set)
            die("--prog/--vers/--proc apply to --call null only");
        if (!auth_set)
            cfg.auth_unix = 1;
        if (!cfg.auth_unix)
            die("--call %s needs --auth unix", kind_names[cfg.kind]);
    }
    if (nuids() > 1 && !cfg.auth_unix)
        die("--uids rotates AUTH_UNIX credentials: add --auth unix");
    if (cfg.duration == 0 && cfg.calls == 0)
        die("give --duration or --calls");
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg.port)};
    if (inet_pton(AF_INET, cfg.host, &sa.sin_addr) != 1)
        die("--host: want an IPv4 address, got %s", cfg.host);
    if ((ntohl(sa.sin_addr.s_addr) >> 24) != 127)
        die("--host: only loopback addresses (127.0.0.0/8) are allowed, got %s", cfg.host);

    sock = socket(AF_INET, cfg.tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (sock < 0)
        die("socket: %s", strerror(errno));
    int big = 4 << 20, one = 1;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (cfg.tcp)
        setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect %s:%d/%s: %s", cfg.host, cfg.port, cfg.tcp ? "tcp" : "udp", strerror(errno));

    srand((unsigned)(now_ns() ^ (uint64_t)getpid()));
    xid_salt = (uint32_t)rand();
    obuf = malloc((size_t)MAX_WINDOW * (MAX_MSG + 4));
    tcp_rbuf = malloc(TCP_RBUF);
    if (!obuf || !tcp_rbuf)
        die("out of memory");

    struct tmpl *tmpls = prepare();
    uint32_t n = nuids();

    if (cfg.warmup > 0) {
        struct phase w = {tmpls, n, 0, cfg.warmup, cfg.kind != K_NULL, 0, NULL};
        struct stats ws;
        memset(&ws, 0, sizeof ws);
        run_phase(&w, &ws);
    }

    struct phase ph = {tmpls, n, cfg.calls, cfg.duration, cfg.kind != K_NULL, 1, NULL};
    struct stats st;
    memset(&st, 0, sizeof st);
    uint64_t ticks0 = 0, ticks1 = 0;
    int have_cpu = cfg.server_pid && read_cpu_ticks(cfg.server_pid, &ticks0) == 0;
    double cpu0 = own_cpu_s();
    uint64_t t0 = now_ns();
    run_phase(&ph, &st);
    uint64_t t1 = now_ns();
    double own_cpu = own_cpu_s() - cpu0;
    if (have_cpu && read_cpu_ticks(cfg.server_pid, &ticks1) != 0)
        have_cpu = 0;
    double wall = (t1 - t0) / 1e9;
    double elapsed = (st.last_reply_ns - st.first_send_ns) / 1e9;
    if (elapsed <= 0)
        elapsed = wall;
    double server_cpu = have_cpu ? (double)(ticks1 - ticks0) / (double)sysconf(_SC_CLK_TCK) : -1;

    qsort(st.lat_ns, st.nlat, sizeof *st.lat_ns, cmp_u64);
    uint64_t ok = st.by_result[RES_OK];
    uint64_t errors = st.replies - ok + st.unmatched + st.timeouts;
    double ops = ok / elapsed;
    double p50 = pct(st.lat_ns, st.nlat, .50), p90 = pct(st.lat_ns, st.nlat, .90);
    double p99 = pct(st.lat_ns, st.nlat, .99);
    double pmax = st.nlat ? st.lat_ns[st.nlat - 1] / 1000.0 : 0;
    double mean = 0;
    for (size_t i = 0; i < st.nlat; i++)
        mean += st.lat_ns[i];
    mean = st.nlat ? mean / st.nlat / 1000.0 : 0;

    const char *proto = cfg.tcp ? "tcp" : "udp";
    uint32_t prog = cfg.kind == K_NULL ? cfg.prog : PROG_NFS;
    uint32_t vers = cfg.kind == K_NULL ? cfg.vers : 3;
    uint32_t proc = cfg.kind == K_NULL ? cfg.proc
                    : cfg.kind == K_GETATTR ? NFSPROC3_GETATTR
                    : cfg.kind == K_LOOKUP ? NFSPROC3_LOOKUP : NFSPROC3_READLINK;

    printf("{\"tool\":\"loadgen\",\"host\":");
    json_str(cfg.host);
    printf(",\"port\":%d,\"proto\":\"%s\",\"call\":\"%s\",\"prog\":%u,\"vers\":%u,\"proc\":%u,"
           "\"auth\":\"%s\",\"uids\":%u,\"uid_first\":%u,\"window\":%u,",
           cfg.port, proto, kind_names[cfg.kind], prog, vers, proc,
           cfg.auth_unix ? "unix" : "none", n, cfg.uid_lo, cfg.window);
    printf("\"elapsed_s\":%.6f,\"sent\":%llu,\"replies\":%llu,\"ok\":%llu,\"errors\":%llu,",
           elapsed, (unsigned long long)st.sent, (unsigned long long)st.replies,
           (unsigned long long)ok, (unsigned long long)errors);
    printf("\"error_kinds\":{");
    for (int r = 1; r < RES_COUNT; r++)
        printf("\"%s\":%llu,", result_names[r], (unsigned long long)st.by_result[r]);
    printf("\"unmatched_xid\":%llu,\"timeout\":%llu},", (unsigned long long)st.unmatched,
           (unsigned long long)st.timeouts);
    printf("\"ops_per_s\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
           "\"max\":%.1f,\"mean\":%.1f},",
           ops, p50, p90, p99, pmax, mean);
    if (have_cpu)
        printf("\"server_pid\":%d,\"server_cpu_s\":%.3f,\"server_cpu_us_per_op\":%.3f,",
               cfg.server_pid, server_cpu, ok ? server_cpu * 1e6 / ok : 0.0);
    else
        printf("\"server_pid\":null,\"server_cpu_s\":null,\"server_cpu_us_per_op\":null,");
    printf("\"loadgen_cpu_s\":%.3f}\n", own_cpu);
    fflush(stdout);

    if (!cfg.quiet) {
        fprintf(stderr, "loadgen: %s %s:%d %s", proto, cfg.host, cfg.port, kind_names[cfg.kind]);
        fprintf(stderr, " (prog %u vers %u proc %u), window %u, %u uid%s, %.2f s\n", prog, vers,
                proc, cfg.window, n, n == 1 ? "" : "s", elapsed);
        fprintf(stderr, "  sent %llu  replies %llu  ok %llu  errors %llu",
                (unsigned long long)st.sent, (unsigned long long)st.replies,
                (unsigned long long)ok, (unsigned long long)errors);
        const char *sep = " (";
        for (int r = 1; r < RES_COUNT; r++)
            if (st.by_result[r]) {
                fprintf(stderr, "%s%s %llu", sep, result_names[r], (unsigned long long)st.by_result[r]);
                sep = ", ";
            }
        if (st.unmatched) {
            fprintf(stderr, "%sunmatched xid %llu", sep, (unsigned long long)st.unmatched);
            sep = ", ";
        }
        if (st.timeouts) {
            fprintf(stderr, "%stimeout %llu", sep, (unsigned long long)st.timeouts);
            sep = ", ";
        }
        fputs(sep[0] == ',' ? ")\n" : "\n", stderr);
        fprintf(stderr, "  %.0f ops/s   latency us: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n",
                ops, p50, p90, p99, pmax);
        if (have_cpu)
            fprintf(stderr, "  server cpu %.2f s (%.0f%% of one core, %.2f us/op)", server_cpu,
                    100 * server_cpu / wall, ok ? server_cpu * 1e6 / ok : 0.0);
        else
            fprintf(stderr, "  server cpu: not measured");
        fprintf(stderr, "   loadgen cpu %.2f s\n", own_cpu);
    }
    return 0;
}
