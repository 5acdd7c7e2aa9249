/*
 * novamig guest agent — runs inside every novamig tiny guest (started by init.sh).
 *
 * Why it exists: a hypervisor's own downtime figure is measured on the source host and misses
 * what the guest actually lives through (device load and resume on the destination, throttling
 * before the switchover, post-copy page faults). This agent gives the host the guest's own view:
 *
 *   - a heartbeat ("H <seq> <guest_ns>") at a configured rate (default 1 kHz) over the
 *     virtio-serial port "org.novamig.agent"; the host timestamps arrivals, so a gap in arrivals
 *     is the downtime the guest saw. A SCHED_FIFO thread paced with
 *     clock_nanosleep(TIMER_ABSTIME) so memory load does not starve it; writes are non-blocking
 *     and a beat that cannot be written is dropped (the gap in seq shows it);
 *   - a memory dirtier: a known dirty-page rate (MiB/s) over a known working set, with the
 *     achieved rate reported, so migration convergence can be tested against a known load;
 *   - a memory-integrity region in the style of QEMU's migration test: every page carries a
 *     static pattern plus a generation counter the agent keeps advancing; a check verifies every
 *     word of every page and reports the first bad page, which proves that migration moved
 *     memory (including pages dirtied during the migration) intact;
 *   - with novamig.hb_udp=<ipv4>:<port>, every beat also goes out as one UDP datagram (the same
 *     "H <seq> <guest_ns>\n" text) to a collector on the network: the guest figure on clouds where
 *     the host cannot read the virtio-serial port (DevStack). Sent non-blocking; errors counted;
 *   - a UDP echo server (port 7) for the host's network probe and a minimal HTTP server (port 80).
 *
 * The protocol is documented in docs/guest-agent.md. One file, static binary, no dependencies
 * beyond libc and pthreads: it is compiled at image build time (gcc -static -O2 -pthread).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define AGENT_VERSION "1"
#define PORT_NAME "org.novamig.agent"
#define PAGE 4096UL
#define WORDS_PER_PAGE (PAGE / sizeof(uint64_t))
#define MIB (1024UL * 1024UL)
#define NS_PER_S 1000000000ULL
#define INTEGRITY_MAGIC 0x6e6f76616d696721ULL /* "novamig!" */
#define MAX_HB_HZ 100000U
#define LINE_MAX_LEN 1024
#define SETTINGS_PATH "/run/novamig/agent.conf"
#define PID_PATH "/run/novamig/agent.pid"

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                              */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void ns_to_ts(uint64_t ns, struct timespec *ts) {
    ts->tv_sec = (time_t)(ns / NS_PER_S);
    ts->tv_nsec = (long)(ns % NS_PER_S);
}

static void sleep_until(uint64_t deadline_ns) {
    struct timespec ts;
    ns_to_ts(deadline_ns, &ts);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Console log (PID 1's stdout is /dev/console): what a person reads in console.log. */
static void logmsg(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "novamig-agent: %s\n", buf);
}

/* Raise the calling thread above the memory load: SCHED_FIFO when asked for, else nice -10. */
static void raise_priority(int realtime, int fifo_prio) {
    if (realtime) {
        struct sched_param sp = {.sched_priority = fifo_prio};
        if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0) return;
        logmsg("could not set SCHED_FIFO %d (using nice -10)", fifo_prio);
    }
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), -10) != 0)
        logmsg("could not set nice -10 (continuing at normal priority)");
}

/* splitmix64: the static part of the integrity pattern, a function of (page, word). */
static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t mem_available_bytes(void) {
    struct sysinfo si;
    if (sysinfo(&si) != 0) return 0;
    return (uint64_t)si.freeram * si.mem_unit;
}

/* ------------------------------------------------------------------------------------------ */
/* configuration (kernel command line, then /run/novamig/agent.conf: novamig.<key>=<value>)    */

static struct {
    unsigned hb_hz;
    double dirty_mib_s;
    unsigned wset_mib;
    unsigned integrity_mib;
    /* novamig.rt=1: SCHED_FIFO for the heartbeat and UDP echo threads; by default they run at
     * nice -10, which under CFS already keeps them ahead of the dirtier (weight 9548 vs 1024)
     * without letting a runaway real-time thread own the single vCPU. */
    int realtime;
    char port_path[256]; /* override for the port device (argv[1]); normally discovered */
    /* novamig.hb_udp=<ipv4>:<port>: also send every beat as a UDP datagram there (0 = off) */
    struct sockaddr_in hb_udp;
    int hb_udp_on;
    char hb_udp_text[48];
} cfg = {.hb_hz = 1000, .realtime = 0};

/* "a.b.c.d:port" → cfg.hb_udp; "0", "off" or "" turn it off; anything else is logged and off. */
static void set_hb_udp(const char *val) {
    char host[32];
    const char *colon = strrchr(val, ':');
    cfg.hb_udp_on = 0;
    cfg.hb_udp_text[0] = 0;
    if (!*val || !strcmp(val, "0") || !strcmp(val, "off")) return;
    unsigned long port = 0;
    char *end = NULL;
    if (colon && (size_t)(colon - val) < sizeof host) {
        memcpy(host, val, (size_t)(colon - val));
        host[colon - val] = 0;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
    }
    struct in_addr a;
    if (!colon || (size_t)(colon - val) >= sizeof host || !end || *end || errno || port == 0 ||
        port > 65535 || colon[1] == 0 || inet_pton(AF_INET, host, &a) != 1) {
        fprintf(stderr, "novamig-agent: novamig.hb_udp=%s ignored: expected <ipv4>:<port>\n", val);
        return;
    }
    memset(&cfg.hb_udp, 0, sizeof cfg.hb_udp);
    cfg.hb_udp.sin_family = AF_INET;
    cfg.hb_udp.sin_port = htons((uint16_t)port);
    cfg.hb_udp.sin_addr = a;
    cfg.hb_udp_on = 1;
    snprintf(cfg.hb_udp_text, sizeof cfg.hb_udp_text, "%s:%lu", host, port);
}

/* Settings: whitespace-separated novamig.<key>=<value> tokens; unknown tokens are ignored. */
static void parse_settings(char *buf) {
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
        if (strncmp(tok, "novamig.", 8) != 0) continue;
        char *key = tok + 8, *eq = strchr(key, '=');
        if (!eq) continue;
        *eq = 0;
        const char *val = eq + 1;
        if (!strcmp(key, "hb_hz")) {
            unsigned long v = strtoul(val, NULL, 10);
            cfg.hb_hz = v > MAX_HB_HZ ? MAX_HB_HZ : (unsigned)v;
        } else if (!strcmp(key, "dirty_mib_s")) {
            cfg.dirty_mib_s = strtod(val, NULL);
        } else if (!strcmp(key, "wset_mib")) {
            cfg.wset_mib = (unsigned)strtoul(val, NULL, 10);
        } else if (!strcmp(key, "rt")) {
            cfg.realtime = strtol(val, NULL, 10) != 0;
        } else if (!strcmp(key, "integrity_mib")) {
            cfg.integrity_mib = (unsigned)strtoul(val, NULL, 10);
        } else if (!strcmp(key, "hb_udp")) {
            set_hb_udp(val);
        }
    }
}

/* Read a whole small file into buf (NUL-terminated); -1 if it cannot be opened. */
static int read_small_file(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = 0;
    return 0;
}

/* The kernel command line first, then the settings file: the file is how a server's user-data
 * configures the agent (written by novamig.workload.userdata before the agent starts, or before
 * it is restarted on a cloud-init guest), so its keys win. Returns 1 when the file was read. */
static int load_settings(void) {
    char buf[4096];
    if (read_small_file("/proc/cmdline", buf, sizeof buf) == 0) parse_settings(buf);
    if (read_small_file(SETTINGS_PATH, buf, sizeof buf) != 0) return 0;
    parse_settings(buf);
    return 1;
}

/* /run/novamig/agent.pid: lets user-data (run by cloud-init after boot) find and restart us. */
static void write_pid_file(void) {
    mkdir("/run/novamig", 0755);
    FILE *f = fopen(PID_PATH ".tmp", "w");
    if (!f) return;
    fprintf(f, "%d\n", (int)getpid());
    if (fclose(f) == 0) rename(PID_PATH ".tmp", PID_PATH);
}

/* The guest's first non-loopback IPv4 address, as configured by init.sh. */
static void guest_ip(char *out, size_t len) {
    struct ifaddrs *ifa = NULL;
    snprintf(out, len, "none");
    if (getifaddrs(&ifa) != 0) return;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK))
            continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, (socklen_t)len);
        break;
    }
    freeifaddrs(ifa);
}

/* ------------------------------------------------------------------------------------------ */
/* output to the host                                                                         */

static int port_fd = -1;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int host_connected; /* under out_lock: the host side had the port open at our last write */
static _Atomic unsigned hb_hz;
static _Atomic unsigned hb_gen; /* bumped on every rate change: wakes the heartbeat pacing */
static _Atomic uint64_t hb_seq;
static _Atomic uint64_t hb_dropped;
static _Atomic uint64_t hb_udp_sent;   /* beats handed to the kernel for novamig.hb_udp */
static _Atomic uint64_t hb_udp_errors; /* beats sendto() refused (no route, buffer full, ...) */
static _Atomic int hb_udp_last_errno;
static uint64_t start_ns;

/* Write a whole line. `must`: wait (up to 2 s) for room instead of dropping the line. Returns 0 when
 * written, -1 when dropped. A line is never written half unless the host vanished mid-line. */
static int write_all_locked(const char *buf, size_t len, int must) {
    size_t off = 0;
    uint64_t deadline = now_ns() + 2 * NS_PER_S;
    while (off < len) {
        ssize_t n = write(port_fd, buf + off, len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) return -1;
        if (off == 0 && !must) return -1;
        if (now_ns() > deadline) return -1;
        struct pollfd p = {.fd = port_fd, .events = POLLOUT};
        poll(&p, 1, 10);
        if (p.revents & POLLHUP) return -1;
    }
    return 0;
}

static void build_ready(char *buf, size_t len) {
    char ip[64];
    struct utsname u;
    struct sysinfo si;
    guest_ip(ip, sizeof ip);
    uname(&u);
    sysinfo(&si);
    unsigned long long mem_mib = (unsigned long long)si.totalram * si.mem_unit / MIB;
    snprintf(buf, len, "READY version=%s hb_hz=%u ip=%s mem_mib=%llu kernel=%s uptime_ms=%" PRIu64 "\n",
             AGENT_VERSION, atomic_load(&hb_hz), ip, mem_mib, u.release, (uint64_t)((now_ns() - start_ns) / 1000000U));
}

/* Emit one line (or only the READY handshake when line is NULL). READY goes out first on every
 * new host connection, so a host that connects late (or reconnects) always learns the state. */
static int emit(const char *line, int must) {
    int rc = -1;
    pthread_mutex_lock(&out_lock);
    if (port_fd >= 0) {
        struct pollfd p = {.fd = port_fd, .events = POLLOUT};
        poll(&p, 1, 0);
        if (p.revents & POLLHUP) {
            host_connected = 0;
        } else {
            rc = 0;
            if (!host_connected) {
                char ready[LINE_MAX_LEN];
                build_ready(ready, sizeof ready);
                if (write_all_locked(ready, strlen(ready), 1) == 0) {
                    host_connected = 1;
                    logmsg("host connected: %.*s", (int)strlen(ready) - 1, ready);
                } else {
                    rc = -1;
                }
            }
            if (rc == 0 && line) rc = write_all_locked(line, strlen(line), must);
        }
    }
    pthread_mutex_unlock(&out_lock);
    return rc;
}

static void emitf(int must, const char *fmt, ...) {
    char buf[LINE_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n] = '\n';
    buf[n + 1] = 0;
    emit(buf, must);
}

#define EVENT(...) emitf(0, "E " __VA_ARGS__)

/* ------------------------------------------------------------------------------------------ */
/* heartbeat                                                                                  */

/* One UDP datagram per beat to novamig.hb_udp: never blocks (MSG_DONTWAIT on a non-blocking,
 * unconnected socket, so an ICMP error from an absent collector is not even reported back). */
static void send_udp_beat(int fd, const char *line, size_t len) {
    ssize_t n = sendto(fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&cfg.hb_udp,
                       sizeof cfg.hb_udp);
    if (n == (ssize_t)len) {
        atomic_fetch_add(&hb_udp_sent, 1);
        return;
    }
    int err = n < 0 ? errno : EMSGSIZE;
    if (atomic_fetch_add(&hb_udp_errors, 1) == 0 || atomic_load(&hb_udp_last_errno) != err)
        logmsg("hb_udp: send to %s failed: %s (counted; beats go on)", cfg.hb_udp_text, strerror(err));
    atomic_store(&hb_udp_last_errno, err);
}

static void *heartbeat_main(void *arg) {
    (void)arg;
    raise_priority(cfg.realtime, 50);
    int udp_fd = -1;
    if (cfg.hb_udp_on) {
        udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (udp_fd < 0) logmsg("hb_udp: socket failed: %s (no UDP beats)", strerror(errno));
    }
    unsigned gen = atomic_load(&hb_gen);
    uint64_t next = now_ns();
    for (;;) {
        unsigned hz = atomic_load(&hb_hz);
        if (hz == 0) {
            /* stopped: look again every 20 ms */
            sleep_until(now_ns() + 20000000ULL);
            next = now_ns();
            continue;
        }
        uint64_t period = NS_PER_S / hz;
        next += period;
        uint64_t now = now_ns();
        if (next + period < now) next = now; /* fell behind (guest paused): no catch-up burst */
        /* sleep in slices of at most 100 ms so a rate change takes effect promptly */
        while (now < next) {
            uint64_t until = next - now > 100000000ULL ? now + 100000000ULL : next;
            sleep_until(until);
            now = now_ns();
            if (atomic_load(&hb_gen) != gen) break;
        }
        if (atomic_load(&hb_gen) != gen) {
            gen = atomic_load(&hb_gen);
            next = now_ns();
            continue;
        }
        uint64_t seq = atomic_fetch_add(&hb_seq, 1) + 1;
        char line[64];
        int len = snprintf(line, sizeof line, "H %" PRIu64 " %" PRIu64 "\n", seq, now_ns());
        /* UDP first: its send is a few µs and must not wait behind the virtio-serial lock */
        if (udp_fd >= 0) send_udp_beat(udp_fd, line, (size_t)len);
        if (emit(line, 0) != 0) atomic_fetch_add(&hb_dropped, 1);
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* memory dirtier                                                                             */

static struct {
    pthread_mutex_t lock; /* serialises start/stop (command thread only, but be explicit) */
    pthread_t thread;
    int running;
    _Atomic int stop;
    double rate_mib_s;
    size_t pages;
    uint8_t *mem;
    /* statistics, written by the dirtier thread */
    _Atomic uint64_t done_pages;
    _Atomic uint64_t started_ns;
    _Atomic uint64_t last_ns;
    _Atomic uint64_t recent_pages; /* pages in the last completed 1 s window */
    _Atomic uint64_t recent_ns;    /* length of that window */
} dirtier = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *dirtier_main(void *arg) {
    (void)arg;
    const uint64_t slice = 5000000ULL; /* 5 ms pacing slices */
    const double pages_per_ns = dirtier.rate_mib_s * MIB / PAGE / 1e9;
    uint64_t start = now_ns(), done = 0, win_start = start, win_done = 0;
    size_t idx = 0;
    uint64_t pass = 1;
    atomic_store(&dirtier.started_ns, start);
    atomic_store(&dirtier.last_ns, start);
    while (!atomic_load(&dirtier.stop)) {
        uint64_t now = now_ns();
        double due_f = (double)(now - start) * pages_per_ns - (double)done;
        /* cap the backlog at two slices (10 ms) of work. Why so short: the dirtier stands for a
         * CPU-bound workload, whose dirtying slows down when its vCPU is throttled. With a longer
         * backlog (it was 100 ms) the dirtier paid back every auto-converge sleep at once on
         * waking, so 75 % throttle did not slow it at all and 99 % still left 20 MiB bursts: a
         * slower host then never converged. Two slices absorb ordinary scheduling delays. */
        double cap = 2.0 * (double)slice * pages_per_ns + 1;
        if (due_f > cap) {
            done += (uint64_t)(due_f - cap);
            due_f = cap;
        }
        uint64_t due = due_f > 0 ? (uint64_t)due_f : 0;
        for (uint64_t i = 0; i < due; i++) {
            /* one 8-byte store per page dirties it; the value changes every pass */
            *(volatile uint64_t *)(dirtier.mem + idx * PAGE) = pass ^ idx;
            if (++idx == dirtier.pages) {
                idx = 0;
                pass++;
            }
            if ((i & 1023) == 1023 && atomic_load(&dirtier.stop)) break;
        }
        done += due;
        atomic_fetch_add(&dirtier.done_pages, due);
        now = now_ns();
        atomic_store(&dirtier.last_ns, now);
        if (now - win_start >= NS_PER_S) {
            uint64_t total = atomic_load(&dirtier.done_pages);
            atomic_store(&dirtier.recent_pages, total - win_done);
            atomic_store(&dirtier.recent_ns, now - win_start);
            win_start = now;
            win_done = total;
        }
        uint64_t next = now + slice - (now - start) % slice;
        sleep_until(next);
    }
    return NULL;
}

static void dirtier_stop_locked(void) {
    if (!dirtier.running) return;
    atomic_store(&dirtier.stop, 1);
    pthread_join(dirtier.thread, NULL);
    munmap(dirtier.mem, dirtier.pages * PAGE);
    dirtier.mem = NULL;
    dirtier.running = 0;
}

/* Returns NULL on success, else a message. */
static const char *dirtier_start(double rate, unsigned wset_mib) {
    const char *err = NULL;
    pthread_mutex_lock(&dirtier.lock);
    dirtier_stop_locked();
    if (rate <= 0) goto out;
    if (wset_mib == 0) {
        err = "working set must be > 0 MiB";
        goto out;
    }
    uint64_t bytes = (uint64_t)wset_mib * MIB;
    if (bytes + 24 * MIB > mem_available_bytes()) {
        err = "working set does not fit in free guest memory";
        goto out;
    }
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (m == MAP_FAILED) {
        err = "mmap of the working set failed";
        goto out;
    }
    memset(m, 0x5a, bytes); /* real pages, not the shared zero page */
    dirtier.mem = m;
    dirtier.pages = bytes / PAGE;
    dirtier.rate_mib_s = rate;
    atomic_store(&dirtier.stop, 0);
    atomic_store(&dirtier.done_pages, 0);
    atomic_store(&dirtier.recent_pages, 0);
    atomic_store(&dirtier.recent_ns, 0);
    if (pthread_create(&dirtier.thread, NULL, dirtier_main, NULL) != 0) {
        munmap(m, bytes);
        dirtier.mem = NULL;
        err = "could not start the dirtier thread";
        goto out;
    }
    dirtier.running = 1;
out:
    pthread_mutex_unlock(&dirtier.lock);
    return err;
}

/* ------------------------------------------------------------------------------------------ */
/* memory integrity                                                                           */
/*
 * Page layout (512 little-endian 64-bit words):
 *   w[0]   generation the page was last written with
 *   w[1]   page index
 *   w[2..510] mix64(page << 9 | word), written once at start
 *   w[511] generation ^ page ^ INTEGRITY_MAGIC (a stale or half-copied page disagrees with w[0])
 * The updater walks the pages in order, writing generation G; when it wraps, G increments. So at
 * any instant pages [0, pos) carry G and pages [pos, N) carry G-1 — an exact expectation for
 * every page, checked with the updater paused.
 */
static struct {
    pthread_mutex_t lock; /* held by the updater per chunk and by the check for the whole scan */
    pthread_t thread;
    int running;
    _Atomic int stop;
    uint64_t *mem;
    size_t pages;
    uint64_t gen; /* current generation G */
    size_t pos;   /* next page to write with G */
    uint64_t pass_ns;
} integ = {.lock = PTHREAD_MUTEX_INITIALIZER};

static inline uint64_t pattern_word(size_t page, size_t word) {
    return mix64(((uint64_t)page << 9) | word);
}

static inline void write_gen(size_t page, uint64_t gen) {
    volatile uint64_t *w = integ.mem + page * WORDS_PER_PAGE;
    w[0] = gen;
    w[WORDS_PER_PAGE - 1] = gen ^ page ^ INTEGRITY_MAGIC;
}

static void *integrity_main(void *arg) {
    (void)arg;
    const size_t chunk = 64;
    uint64_t pass_start = now_ns();
    while (!atomic_load(&integ.stop)) {
        pthread_mutex_lock(&integ.lock);
        size_t end = integ.pos + chunk < integ.pages ? integ.pos + chunk : integ.pages;
        for (size_t p = integ.pos; p < end; p++) write_gen(p, integ.gen);
        integ.pos = end;
        if (integ.pos == integ.pages) {
            integ.pos = 0;
            integ.gen++;
        }
        size_t pos = integ.pos;
        pthread_mutex_unlock(&integ.lock);
        if (integ.pass_ns == 0) {
            sched_yield();
            continue;
        }
        /* pace: page `pos` is due at pass_start + pos/pages of the pass time */
        if (pos == 0) {
            pass_start += integ.pass_ns;
            uint64_t now = now_ns();
            if (pass_start + integ.pass_ns < now) pass_start = now; /* fell behind: no burst */
            sleep_until(pass_start);
        } else {
            sleep_until(pass_start + (uint64_t)((double)integ.pass_ns * (double)pos / (double)integ.pages));
        }
    }
    return NULL;
}

/* One check's verdict: kept as the last one, for GET /integrity. */
struct integ_verdict {
    int region; /* 0: no region was running, nothing checked */
    int ok;
    size_t pages, bad_page, bad_word, bad_count;
    uint64_t gen, expected, found, check_ms, at_ms; /* at_ms: agent uptime when checked */
};
/* admin: held by integrity-start/-stop and by every check, so a check from the HTTP thread never
 * races the command thread unmapping the region; `last`/`checks` are under it too. */
static pthread_mutex_t integ_admin = PTHREAD_MUTEX_INITIALIZER;
static struct integ_verdict integ_last;
static uint64_t integ_checks;

static void integrity_stop_locked(void) {
    if (!integ.running) return;
    atomic_store(&integ.stop, 1);
    pthread_join(integ.thread, NULL);
    munmap(integ.mem, integ.pages * PAGE);
    integ.mem = NULL;
    integ.running = 0;
}

static void integrity_stop(void) {
    pthread_mutex_lock(&integ_admin);
    integrity_stop_locked();
    integ_last = (struct integ_verdict){0}; /* a verdict on a region that is gone says nothing */
    pthread_mutex_unlock(&integ_admin);
}

static const char *integrity_start_locked(unsigned mib, unsigned pass_ms) {
    integrity_stop_locked();
    integ_last = (struct integ_verdict){0};
    if (mib == 0) return "region size must be > 0 MiB";
    uint64_t bytes = (uint64_t)mib * MIB;
    if (bytes + 24 * MIB > mem_available_bytes()) return "region does not fit in free guest memory";
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (m == MAP_FAILED) return "mmap of the integrity region failed";
    integ.mem = m;
    integ.pages = bytes / PAGE;
    for (size_t p = 0; p < integ.pages; p++) {
        uint64_t *w = integ.mem + p * WORDS_PER_PAGE;
        w[1] = p;
        for (size_t j = 2; j < WORDS_PER_PAGE - 1; j++) w[j] = pattern_word(p, j);
        write_gen(p, 1);
    }
    integ.gen = 2;
    integ.pos = 0;
    integ.pass_ns = (uint64_t)pass_ms * 1000000ULL;
    atomic_store(&integ.stop, 0);
    if (pthread_create(&integ.thread, NULL, integrity_main, NULL) != 0) {
        munmap(m, bytes);
        integ.mem = NULL;
        return "could not start the integrity thread";
    }
    integ.running = 1;
    return NULL;
}

static const char *integrity_start(unsigned mib, unsigned pass_ms) {
    pthread_mutex_lock(&integ_admin);
    const char *err = integrity_start_locked(mib, pass_ms);
    pthread_mutex_unlock(&integ_admin);
    return err;
}

/* Verify every word of every page (call with integ_admin held); the first bad one is reported. */
static struct integ_verdict integrity_verify(void) {
    struct integ_verdict v = {0};
    if (!integ.running) return v;
    v.region = 1;
    uint64_t t0 = now_ns();
    pthread_mutex_lock(&integ.lock);
    uint64_t gen = integ.gen;
    size_t pos = integ.pos, pages = integ.pages;
    int bad = 0;
    for (size_t p = 0; p < pages && !bad; p++) {
        const uint64_t *w = integ.mem + p * WORDS_PER_PAGE;
        uint64_t g = p < pos ? gen : gen - 1;
        for (size_t j = 0; j < WORDS_PER_PAGE; j++) {
            uint64_t want;
            if (j == 0) want = g;
            else if (j == 1) want = p;
            else if (j == WORDS_PER_PAGE - 1) want = g ^ p ^ INTEGRITY_MAGIC;
            else want = pattern_word(p, j);
            if (w[j] != want) {
                bad = 1;
                v.bad_page = p;
                v.bad_word = j;
                v.expected = want;
                v.found = w[j];
                break;
            }
        }
    }
    if (bad) { /* count the bad pages too: one stale page and a zeroed region look different */
        for (size_t p = v.bad_page; p < pages; p++) {
            const uint64_t *w = integ.mem + p * WORDS_PER_PAGE;
            uint64_t g = p < pos ? gen : gen - 1;
            int ok = w[0] == g && w[1] == p && w[WORDS_PER_PAGE - 1] == (g ^ p ^ INTEGRITY_MAGIC);
            for (size_t j = 2; ok && j < WORDS_PER_PAGE - 1; j++) ok = w[j] == pattern_word(p, j);
            v.bad_count += !ok;
        }
    }
    pthread_mutex_unlock(&integ.lock);
    v.ok = !bad;
    v.pages = pages;
    v.gen = gen;
    v.check_ms = (now_ns() - t0) / 1000000U;
    v.at_ms = (now_ns() - start_ns) / 1000000U;
    integ_last = v;
    integ_checks++;
    return v;
}

static void integrity_check(const char *id) {
    pthread_mutex_lock(&integ_admin);
    struct integ_verdict v = integrity_verify();
    pthread_mutex_unlock(&integ_admin);
    if (!v.region)
        emitf(1, "R %s err msg=integrity region not started", id);
    else if (!v.ok)
        emitf(1,
              "R %s err first_bad_page=%zu expected=0x%016" PRIx64 " found=0x%016" PRIx64
              " word=%zu bad_pages=%zu pages=%zu generation=%" PRIu64 " check_ms=%" PRIu64
              " msg=integrity check failed",
              id, v.bad_page, v.expected, v.found, v.bad_word, v.bad_count, v.pages, v.gen, v.check_ms);
    else
        emitf(1, "R %s ok pages=%zu generation=%" PRIu64 " check_ms=%" PRIu64, id, v.pages, v.gen, v.check_ms);
}

/* Test-only: damage one word of one page so a test can prove the check detects it. */
static const char *integrity_corrupt(unsigned long page) {
    const char *err = NULL;
    pthread_mutex_lock(&integ_admin);
    if (!integ.running) err = "integrity region not started";
    else if (page >= integ.pages) err = "page out of range";
    else {
        pthread_mutex_lock(&integ.lock);
        integ.mem[page * WORDS_PER_PAGE + 2] ^= 1;
        pthread_mutex_unlock(&integ.lock);
    }
    pthread_mutex_unlock(&integ_admin);
    return err;
}

/* ------------------------------------------------------------------------------------------ */
/* network: UDP echo (port 7) and minimal HTTP (port 80)                                       */

static void *udp_echo_main(void *arg) {
    (void)arg;
    raise_priority(cfg.realtime, 40);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7), .sin_addr.s_addr = INADDR_ANY};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        logmsg("UDP echo: bind to port 7 failed: %s", strerror(errno));
        EVENT("udp-echo unavailable: %s", strerror(errno));
        return NULL;
    }
    char buf[65536];
    for (;;) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) {
            if (errno == EINTR) continue;
            sleep_until(now_ns() + 10000000ULL);
            continue;
        }
        sendto(fd, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out);

/* GET /integrity[?check=1|?corrupt=<page>] (docs/guest-agent.md): the verdict as JSON, so a host
 * that cannot read virtio-serial (a libvirt cloud) checks the region through the guest's address.
 * Returns the HTTP status. */
static const char *integrity_http(const char *query, char *body, size_t n) {
    unsigned long page;
    if (!strncmp(query, "corrupt=", 8)) { /* test-only, like the integrity-corrupt command */
        const char *err = parse_uint(query + 8, ~0UL, &page) != 0 ? "usage: /integrity?corrupt=<page>"
                                                                     : integrity_corrupt(page);
        if (err) {
            snprintf(body, n, "{\"error\": \"%s\"}\n", err);
            return "409 Conflict";
        }
        snprintf(body, n, "{\"corrupted_page\": %lu}\n", page);
        return "200 OK";
    }
    if (*query && strcmp(query, "check=1") != 0) {
        snprintf(body, n, "{\"error\": \"unknown query: use check=1 or corrupt=<page>\"}\n");
        return "400 Bad Request";
    }
    pthread_mutex_lock(&integ_admin);
    struct integ_verdict v = *query ? integrity_verify() : integ_last;
    uint64_t checks = integ_checks;
    int region = integ.running;
    pthread_mutex_unlock(&integ_admin);
    int len = snprintf(body, n, "{\"region\": %s, \"checks\": %" PRIu64 ", \"uptime_ms\": %" PRIu64,
                       region ? "true" : "false", checks, (now_ns() - start_ns) / 1000000U);
    if (!v.region)
        snprintf(body + len, n - (size_t)len, ", \"ok\": null}\n"); /* nothing checked (yet) */
    else if (v.ok)
        snprintf(body + len, n - (size_t)len,
                 ", \"ok\": true, \"pages\": %zu, \"generation\": %" PRIu64 ", \"check_ms\": %" PRIu64
                 ", \"checked_at_ms\": %" PRIu64 "}\n",
                 v.pages, v.gen, v.check_ms, v.at_ms);
    else
        snprintf(body + len, n - (size_t)len,
                 ", \"ok\": false, \"pages\": %zu, \"generation\": %" PRIu64 ", \"check_ms\": %" PRIu64
                 ", \"checked_at_ms\": %" PRIu64 ", \"first_bad_page\": %zu, \"word\": %zu, \"expected\": "
                 "\"0x%016" PRIx64 "\", \"found\": \"0x%016" PRIx64 "\", \"bad_pages\": %zu}\n",
                 v.pages, v.gen, v.check_ms, v.at_ms, v.bad_page, v.bad_word, v.expected, v.found, v.bad_count);
    return "200 OK";
}

static _Atomic unsigned http_clients;
static _Atomic uint64_t http_requests;

static int send_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *http_conn_main(void *arg) {
    int fd = (int)(intptr_t)arg;
    char req[8192];
    size_t have = 0;
    for (;;) {
        char *end = memmem(req, have, "\r\n\r\n", 4);
        if (!end) {
            if (have == sizeof req) break; /* header too large */
            ssize_t n = recv(fd, req + have, sizeof req - have, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            have += (size_t)n;
            continue;
        }
        size_t hlen = (size_t)(end - req) + 4;
        char method[8] = "", path[256] = "";
        sscanf(req, "%7s %255s", method, path);
        int close_after = memmem(req, hlen, "onnection: close", 16) != NULL ||
                          memmem(req, hlen, "HTTP/1.0", 8) != NULL;
        char body[512];
        const char *status = "200 OK", *ctype = "text/plain";
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            status = "405 Method Not Allowed";
            snprintf(body, sizeof body, "method not allowed\n");
        } else if (!strcmp(path, "/")) {
            snprintf(body, sizeof body, "novamig guest agent %s\n", AGENT_VERSION);
        } else if (!strcmp(path, "/health")) {
            ctype = "application/json";
            snprintf(body, sizeof body,
                     "{\"status\": \"ok\", \"version\": \"%s\", \"hb_seq\": %" PRIu64
                     ", \"uptime_ns\": %" PRIu64 ", \"requests\": %" PRIu64 "}\n",
                     AGENT_VERSION, atomic_load(&hb_seq), now_ns() - start_ns,
                     atomic_load(&http_requests) + 1);
        } else if (!strncmp(path, "/integrity", 10) && (path[10] == 0 || path[10] == '?')) {
            ctype = "application/json";
            status = integrity_http(path[10] ? path + 11 : "", body, sizeof body);
        } else {
            status = "404 Not Found";
            snprintf(body, sizeof body, "not found\n");
        }
        atomic_fetch_add(&http_requests, 1);
        char resp[1024];
        int blen = (int)strlen(body);
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                         "Connection: %s\r\n\r\n%s",
                         status, ctype, blen, close_after ? "close" : "keep-alive",
                         strcmp(method, "HEAD") ? body : "");
        if (send_all(fd, resp, (size_t)n) != 0 || close_after) break;
        memmove(req, req + hlen, have - hlen); /* request bodies are not supported (GET only) */
        have -= hlen;
    }
    close(fd);
    atomic_fetch_sub(&http_clients, 1);
    return NULL;
}

static void *http_main(void *arg) {
    (void)arg;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(80), .sin_addr.s_addr = INADDR_ANY};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0) {
        logmsg("HTTP: listen on port 80 failed: %s", strerror(errno));
        EVENT("http unavailable: %s", strerror(errno));
        return NULL;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno != EINTR) sleep_until(now_ns() + 10000000ULL);
            continue;
        }
        if (atomic_load(&http_clients) >= 64) { /* bound the threads a client can make us hold */
            close(c);
            continue;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct timeval tv = {.tv_sec = 30};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        pthread_t t;
        atomic_fetch_add(&http_clients, 1);
        if (pthread_create(&t, &attr, http_conn_main, (void *)(intptr_t)c) != 0) {
            atomic_fetch_sub(&http_clients, 1);
            close(c);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* commands from the host                                                                     */

static int parse_uint(const char *s, unsigned long max, unsigned long *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || errno || v > max || *s == '-') return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double max, double *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !(v >= 0) || v > max) return -1;
    *out = v;
    return 0;
}

static void handle_command(char *line) {
    char *save = NULL;
    char *id = strtok_r(line, " \t\r", &save);
    if (!id) return;
    char *cmd = strtok_r(NULL, " \t\r", &save);
    char *a1 = strtok_r(NULL, " \t\r", &save);
    char *a2 = strtok_r(NULL, " \t\r", &save);
    char *a3 = strtok_r(NULL, " \t\r", &save);
    unsigned long u1, u2;
    double d1;
    if (!cmd) {
        emitf(1, "R %s err msg=empty command", id);
    } else if (!strcmp(cmd, "ping")) {
        emitf(1, "R %s ok guest_ns=%" PRIu64, id, now_ns());
    } else if (!strcmp(cmd, "hb")) {
        if (a2 || parse_uint(a1, MAX_HB_HZ, &u1) != 0) {
            emitf(1, "R %s err msg=usage: hb <hz> with 0 <= hz <= %u", id, MAX_HB_HZ);
            return;
        }
        atomic_store(&hb_hz, (unsigned)u1);
        atomic_fetch_add(&hb_gen, 1);
        emitf(1, "R %s ok hb_hz=%lu", id, u1);
    } else if (!strcmp(cmd, "dirty")) {
        if (a3 || parse_double(a1, 1e6, &d1) != 0 || parse_uint(a2, 1UL << 20, &u2) != 0) {
            emitf(1, "R %s err msg=usage: dirty <rate_mib_s> <working_set_mib>", id);
            return;
        }
        const char *err = dirtier_start(d1, (unsigned)u2);
        if (err)
            emitf(1, "R %s err msg=%s", id, err);
        else
            emitf(1, "R %s ok target_mib_s=%.3f wset_mib=%lu", id, d1, d1 > 0 ? u2 : 0UL);
    } else if (!strcmp(cmd, "dirty-stats")) {
        pthread_mutex_lock(&dirtier.lock);
        uint64_t pages = atomic_load(&dirtier.done_pages);
        uint64_t t0 = atomic_load(&dirtier.started_ns);
        uint64_t t1 = dirtier.running ? now_ns() : atomic_load(&dirtier.last_ns);
        double secs = t0 ? (double)(t1 - t0) / 1e9 : 0.0;
        double achieved = secs > 0 ? (double)pages * PAGE / MIB / secs : 0.0;
        uint64_t rp = atomic_load(&dirtier.recent_pages), rn = atomic_load(&dirtier.recent_ns);
        double recent = rn ? (double)rp * PAGE / MIB / ((double)rn / 1e9) : achieved;
        emitf(1,
              "R %s ok achieved_mib_s=%.3f pages=%" PRIu64 " seconds=%.3f target_mib_s=%.3f"
              " wset_mib=%zu recent_mib_s=%.3f running=%d",
              id, achieved, pages, secs, dirtier.running ? dirtier.rate_mib_s : 0.0,
              dirtier.running ? dirtier.pages * PAGE / MIB : 0UL, recent, dirtier.running);
        pthread_mutex_unlock(&dirtier.lock);
    } else if (!strcmp(cmd, "integrity-start")) {
        u2 = 1000;
        if (a3 || parse_uint(a1, 1UL << 20, &u1) != 0 || (a2 && parse_uint(a2, 3600000, &u2) != 0)) {
            emitf(1, "R %s err msg=usage: integrity-start <mib> [pass_ms]", id);
            return;
        }
        const char *err = integrity_start((unsigned)u1, (unsigned)u2);
        if (err)
            emitf(1, "R %s err msg=%s", id, err);
        else
            emitf(1, "R %s ok pages=%zu pass_ms=%lu", id, integ.pages, u2);
    } else if (!strcmp(cmd, "integrity-check")) {
        integrity_check(id);
    } else if (!strcmp(cmd, "integrity-stop")) {
        integrity_stop();
        emitf(1, "R %s ok", id);
    } else if (!strcmp(cmd, "integrity-corrupt")) {
        const char *err = parse_uint(a1, ~0UL, &u1) != 0 ? "usage: integrity-corrupt <page>"
                                                          : integrity_corrupt(u1);
        if (err)
            emitf(1, "R %s err msg=%s", id, err);
        else
            emitf(1, "R %s ok page=%lu", id, u1);
    } else if (!strcmp(cmd, "info")) {
        char ip[64];
        struct utsname u;
        struct sysinfo si;
        guest_ip(ip, sizeof ip);
        uname(&u);
        sysinfo(&si);
        emitf(1,
              "R %s ok version=%s hb_hz=%u ip=%s mem_mib=%llu kernel=%s seq=%" PRIu64 " dropped=%" PRIu64
              " uptime_ms=%" PRIu64 " dirtier=%d integrity=%d http_requests=%" PRIu64
              " hb_udp=%s udp_sent=%" PRIu64 " udp_errors=%" PRIu64,
              id, AGENT_VERSION, atomic_load(&hb_hz), ip,
              (unsigned long long)si.totalram * si.mem_unit / MIB, u.release, atomic_load(&hb_seq),
              atomic_load(&hb_dropped), (uint64_t)((now_ns() - start_ns) / 1000000U), dirtier.running,
              integ.running, atomic_load(&http_requests), cfg.hb_udp_on ? cfg.hb_udp_text : "off",
              atomic_load(&hb_udp_sent), atomic_load(&hb_udp_errors));
    } else {
        emitf(1, "R %s err msg=unknown command: %s", id, cmd);
    }
}

/* Find the virtio-serial port named org.novamig.agent: /sys/class/virtio-ports/vportNpM/name. */
static int find_port(char *path, size_t len) {
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[512], name[128] = "";
        snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f) continue;
        if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0;
        fclose(f);
        if (!strcmp(name, PORT_NAME)) {
            snprintf(path, len, "/dev/%s", e->d_name);
            found = 0;
            break;
        }
    }
    closedir(d);
    return found;
}

static void command_loop(void) {
    char buf[4096];
    size_t have = 0;
    int was_hup = 1;
    for (;;) {
        struct pollfd p = {.fd = port_fd, .events = POLLIN};
        int r = poll(&p, 1, 200);
        if (r < 0) continue;
        if (p.revents & POLLHUP) {
            /* host side closed: drop any partial command, look again shortly (no busy loop) */
            if (!was_hup) emit(NULL, 0); /* records the disconnect */
            was_hup = 1;
            have = 0;
            sleep_until(now_ns() + 20000000ULL);
            continue;
        }
        if (was_hup) {
            was_hup = 0;
            emit(NULL, 1); /* host connected: READY now, even if heartbeats are off */
        }
        if (!(p.revents & POLLIN)) continue;
        ssize_t n = read(port_fd, buf + have, sizeof buf - have);
        if (n <= 0) continue;
        have += (size_t)n;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', (size_t)(buf + have - start)))) {
            *nl = 0;
            handle_command(start);
            start = nl + 1;
        }
        have = (size_t)(buf + have - start);
        memmove(buf, start, have);
        if (have == sizeof buf) have = 0; /* an over-long line: discard it */
    }
}

/* The integrity region and the dirtier the settings ask for. With novamig.hb_udp they start
 * before the wait for the virtio-serial port, like the beats: on a cloud that gives the guest no
 * such port (DevStack, Nova's libvirt driver) that wait never ends, and the region would never
 * exist for GET /integrity to check. Without it they start once the port is open, as always. */
static void start_boot_work(void) {
    if (cfg.integrity_mib) {
        const char *err = integrity_start(cfg.integrity_mib, 1000);
        if (err) logmsg("integrity region at boot: %s", err);
    }
    if (cfg.dirty_mib_s > 0) {
        const char *err = dirtier_start(cfg.dirty_mib_s, cfg.wset_mib ? cfg.wset_mib : 64);
        if (err) logmsg("dirtier at boot: %s", err);
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    start_ns = now_ns();
    int from_file = load_settings();
    write_pid_file();
    atomic_store(&hb_hz, cfg.hb_hz);
    if (argc > 1) snprintf(cfg.port_path, sizeof cfg.port_path, "%s", argv[1]);

    /* With novamig.hb_udp the beats (and UDP echo, HTTP) must not wait for the virtio-serial port:
     * on a cloud whose host does not give the guest that port (DevStack) it never appears, and the
     * UDP beat is the only guest figure. Without it the threads start once the port is open, as
     * always (the first beat the host can see is seq 1). */
    pthread_t t;
    int early = cfg.hb_udp_on;
    if (early) {
        pthread_create(&t, NULL, heartbeat_main, NULL);
        pthread_create(&t, NULL, udp_echo_main, NULL);
        pthread_create(&t, NULL, http_main, NULL);
        logmsg("hb_udp: beats at %u Hz to %s (before the virtio-serial port is open)", cfg.hb_hz,
               cfg.hb_udp_text);
        start_boot_work();
    }
    char path[300];
    if (cfg.port_path[0]) {
        snprintf(path, sizeof path, "%s", cfg.port_path);
    } else {
        int warned = 0;
        while (find_port(path, sizeof path) != 0) {
            if (!warned++) logmsg("waiting for virtio-serial port %s", PORT_NAME);
            sleep_until(now_ns() + 50000000ULL);
        }
    }
    int fd;
    for (int tries = 0; (fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0; tries++) {
        if (tries == 0) logmsg("waiting to open %s: %s", path, strerror(errno));
        sleep_until(now_ns() + 50000000ULL);
    }
    pthread_mutex_lock(&out_lock);
    port_fd = fd;
    pthread_mutex_unlock(&out_lock);

    if (!early) {
        pthread_create(&t, NULL, heartbeat_main, NULL);
        pthread_create(&t, NULL, udp_echo_main, NULL);
        pthread_create(&t, NULL, http_main, NULL);
    }
    if (!early) start_boot_work();
    char ip[64];
    guest_ip(ip, sizeof ip);
    logmsg("up: version=%s port=%s hb_hz=%u ip=%s dirty_mib_s=%g wset_mib=%u integrity_mib=%u hb_udp=%s settings=%s",
           AGENT_VERSION, path, cfg.hb_hz, ip, cfg.dirty_mib_s, cfg.dirty_mib_s > 0 ? (cfg.wset_mib ? cfg.wset_mib : 64) : 0,
           cfg.integrity_mib, cfg.hb_udp_on ? cfg.hb_udp_text : "off", from_file ? "cmdline+" SETTINGS_PATH : "cmdline");
    command_loop();
    return 0;
}
