/* faultpath's real-kernel probe: runs a scenario spec inside the guest and times every op.
 *
 * Usage: probe SPEC OUTDIR
 *
 * SPEC is the line format actors/lab/realkernel/spec.py writes (one record a
 * line, fields separated by spaces):
 *
 *   horizon NS | seed N | dev PATH (sysfs dev file of the disk io.max limits)
 *   cgroup PATH IOMAX-BODY|-          (created under /sys/fs/cgroup, "+io +memory" enabled above it)
 *   memory PATH MAX HIGH               (the cgroup's memory.max and memory.high in bytes, -1 = "max")
 *   proc NAME CGROUP|-                 (a process; "-" = the root cgroup)
 *   map PATH|- LENGTH SHARED WRITABLE ADVICE (ADVICE 0 normal 1 random 2 sequential;
 *                                              "-": anonymous, MAP_PRIVATE | MAP_ANONYMOUS)
 *   thread NAME ITERATIONS EVERY_NS START_NS
 *   op touch MAP PATTERN PAGES WRITE HOT   (PATTERN 0 sequential 1 random 2 hotset)
 *   op mmap LENGTH | op munmap | op mprotect MAP|-1 PROT (0 keep 1 r 2 rw)
 *   op think NS DIST (0 fixed 1 exp)
 *   op proc FILE MAP PAGES PATTERN NTARGETS T...  (FILE 0 cmdline 1 maps 2 mem; T: a
 *                                                  process index, -1 = the reader itself)
 *
 * Mappings of process P are placed at fixed addresses (MAP_BASE + P * PROC_SPAN +
 * M * MAP_SPAN) so that a /proc/<pid>/mem reader knows where a target's mapping is.
 * Every op's latency is CLOCK_MONOTONIC from its start (for a thread with an
 * "every" schedule, the first op of an iteration counts from the intended
 * start) to its end; ops ending after the horizon are not recorded. Each
 * process writes OUTDIR/<proc>.samples: "S THREAD OP LATENCY_NS END_NS" lines,
 * then "E THREAD INFLIGHT" and "R THREAD MINFLT MAJFLT" per thread (the thread's
 * fault counts at the horizon, fields 10 and 12 of /proc/self/task/TID/stat:
 * faults it took in its own mm and, through GUP, in a /proc/<pid>/mem or
 * cmdline target's). The parent writes OUTDIR/kernel.vmstat: "V NAME DELTA" for
 * each /proc/vmstat counter of VMSTAT_NAMES the kernel has, from the start of
 * the run to its end, and OUTDIR/kernel.stacks: every SAMPLE_NS the parent reads
 * each thread's state and, when it sleeps, its kernel stack
 * (/proc/PID/task/TID/stack, the top STACK_FRAMES frames), and writes
 * "W THREAD COUNT STATE:frame;frame;..." per distinct (thread, state, stack),
 * "W THREAD COUNT R:" for the samples that found it runnable: where the time
 * of each thread went, an off-CPU profile. Errors go to stderr as
 * "probe error: ...", progress as "probe: ...".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64
#define MAX_MAPS 8
#define MAX_THREADS 16
#define MAX_OPS 16
#define MAX_TARGETS MAX_PROCS
#define MAP_BASE 0x100000000000ULL
#define PROC_SPAN (1ULL << 40)
#define MAP_SPAN (1ULL << 36)
#define PAGE 4096

enum { OP_TOUCH, OP_MMAP, OP_MUNMAP, OP_MPROTECT, OP_THINK, OP_PROC };
static const char *op_names[] = {"touch", "mmap", "munmap", "mprotect", "think", "proc_read"};

struct op { int kind; long long a[6]; int ntargets; int targets[MAX_TARGETS]; };
struct sample { int op; long long lat, end; };
struct thread {
    char name[64]; long long iterations, every, start;
    int nops; struct op ops[MAX_OPS];
    struct sample *samples; size_t n, cap; int inflight; uint64_t rng; int proc;
    long long seq_cursor[MAX_MAPS];
    void *last_region; size_t last_length;
    volatile pid_t tid;
    volatile int counted; long long minflt, majflt; /* set by the thread as it ends */
};
struct map { char path[256]; long long length; int shared, writable, advice, prot; void *addr; };
struct proc { char name[64], cgroup[256]; int nmaps, nthreads; struct map maps[MAX_MAPS]; struct thread threads[MAX_THREADS]; };
struct shared { volatile int ready; volatile long long t0; volatile pid_t pids[MAX_PROCS]; };

static struct proc procs[MAX_PROCS];
static int nprocs;
static long long horizon = 1000000000LL, seed = 1;
static char devfile[256] = "/sys/block/vda/dev";
static struct shared *shm;

static void die(const char *what) { fprintf(stderr, "probe error: %s: %s\n", what, strerror(errno)); exit(3); }
static void bad(int line, const char *what) { fprintf(stderr, "probe error: spec line %d: %s\n", line, what); exit(2); }

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(long long t) {
    struct timespec ts = {t / 1000000000LL, t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

static uint64_t rnd(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, text, strlen(text)) < 0) {
        fprintf(stderr, "probe error: writing \"%s\" to %s: %s\n", text, path, strerror(errno));
        exit(3);
    }
    close(fd);
}

static void parse(const char *path) {
    FILE *f = fopen(path, "r");
    char line[4096];
    int no = 0;
    struct proc *p = NULL;
    struct thread *t = NULL;
    if (!f) die(path);
    while (fgets(line, sizeof line, f)) {
        char kind[32], name[256], rest[1024];
        no++;
        if (sscanf(line, "%31s", kind) != 1) continue;
        if (!strcmp(kind, "horizon")) { if (sscanf(line, "%*s %lld", &horizon) != 1) bad(no, "horizon NS"); }
        else if (!strcmp(kind, "seed")) { if (sscanf(line, "%*s %lld", &seed) != 1) bad(no, "seed N"); }
        else if (!strcmp(kind, "dev")) { if (sscanf(line, "%*s %255s", devfile) != 1) bad(no, "dev PATH"); }
        else if (!strcmp(kind, "cgroup")) {
            char dir[512], file[600], dev[32] = "", limit[1100];
            FILE *d;
            if (sscanf(line, "%*s %255s %1023[^\n]", name, rest) != 2) bad(no, "cgroup PATH IOMAX");
            for (char *s = name; (s = strchr(s, '/')); s++) { /* enable io in every ancestor */
                *s = 0; snprintf(dir, sizeof dir, "/sys/fs/cgroup/%s", name); mkdir(dir, 0755);
                snprintf(file, sizeof file, "%s/cgroup.subtree_control", dir); write_file(file, "+io +memory"); *s = '/';
            }
            snprintf(dir, sizeof dir, "/sys/fs/cgroup/%s", name);
            if (mkdir(dir, 0755) && errno != EEXIST) die(dir);
            if (strcmp(rest, "-")) {
                if (!(d = fopen(devfile, "r")) || fscanf(d, "%31s", dev) != 1) die(devfile);
                fclose(d);
                snprintf(file, sizeof file, "%s/io.max", dir);
                snprintf(limit, sizeof limit, "%s %s", dev, rest);
                write_file(file, limit);
                fprintf(stderr, "probe: %s io.max = %s\n", name, limit);
            }
        } else if (!strcmp(kind, "memory")) {
            long long limit[2];
            char file[600], text[32];
            if (sscanf(line, "%*s %255s %lld %lld", name, &limit[0], &limit[1]) != 3) bad(no, "memory PATH MAX HIGH");
            for (int k = 0; k < 2; k++) {
                snprintf(file, sizeof file, "/sys/fs/cgroup/%s/memory.%s", name, k ? "high" : "max");
                if (limit[k] < 0) snprintf(text, sizeof text, "max"); else snprintf(text, sizeof text, "%lld", limit[k]);
                write_file(file, text);
                fprintf(stderr, "probe: %s memory.%s = %s\n", name, k ? "high" : "max", text);
            }
        } else if (!strcmp(kind, "proc")) {
            if (nprocs == MAX_PROCS) bad(no, "too many processes");
            p = &procs[nprocs++]; t = NULL;
            if (sscanf(line, "%*s %63s %255s", p->name, p->cgroup) != 2) bad(no, "proc NAME CGROUP");
        } else if (!strcmp(kind, "map")) {
            struct map *m;
            if (!p || p->nmaps == MAX_MAPS) bad(no, "map outside a proc or too many");
            m = &p->maps[p->nmaps];
            if (sscanf(line, "%*s %255s %lld %d %d %d", m->path, &m->length, &m->shared, &m->writable, &m->advice) != 5) bad(no, "map PATH LENGTH SHARED WRITABLE ADVICE");
            m->addr = (void *)(MAP_BASE + (nprocs - 1) * PROC_SPAN + p->nmaps * MAP_SPAN);
            p->nmaps++;
        } else if (!strcmp(kind, "thread")) {
            if (!p || p->nthreads == MAX_THREADS) bad(no, "thread outside a proc or too many");
            t = &p->threads[p->nthreads++];
            t->proc = nprocs - 1;
            if (sscanf(line, "%*s %63s %lld %lld %lld", t->name, &t->iterations, &t->every, &t->start) != 4) bad(no, "thread NAME ITERATIONS EVERY START");
        } else if (!strcmp(kind, "op")) {
            struct op *o;
            char *cur;
            int used, i;
            if (!t || t->nops == MAX_OPS) bad(no, "op outside a thread or too many");
            o = &t->ops[t->nops++];
            if (sscanf(line, "%*s %255s %n", name, &used) != 1) bad(no, "op KIND ...");
            for (o->kind = 0; o->kind <= OP_PROC && strcmp(name, op_names[o->kind]); o->kind++) {}
            if (o->kind > OP_PROC) bad(no, "unknown op");
            cur = line + used;
            for (i = 0; i < 6 && sscanf(cur, "%lld%n", &o->a[i], &used) == 1; i++) cur += used;
            if (o->kind == OP_PROC) {
                if (i < 5) bad(no, "op proc_read FILE MAP PAGES PATTERN NTARGETS T...");
                o->ntargets = (int)o->a[4];
                o->targets[0] = (int)o->a[5];
                for (int k = 1; k < o->ntargets && sscanf(cur, "%d%n", &o->targets[k], &used) == 1; k++) cur += used;
            }
        } else bad(no, "unknown record");
    }
    fclose(f);
}

static void record(struct thread *t, int op, long long start, long long end, long long deadline) {
    if (end > deadline) return;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1024;
        t->samples = realloc(t->samples, t->cap * sizeof *t->samples);
        if (!t->samples) die("realloc");
    }
    t->samples[t->n++] = (struct sample){op, end - start, end};
}

static volatile char sink;

static void do_touch(struct thread *t, struct op *o) {
    struct map *m = &procs[t->proc].maps[o->a[0]];
    long long npages = m->length / PAGE;
    for (long long i = 0; i < o->a[2]; i++) {
        long long page;
        if (o->a[1] == 0) page = t->seq_cursor[o->a[0]]++ % npages;
        else page = rnd(&t->rng) % (o->a[1] == 2 && o->a[4] < npages ? o->a[4] : npages);
        volatile char *addr = (char *)m->addr + page * PAGE;
        if (o->a[3]) *addr = *addr + 1; else sink = *addr;
    }
}

static void do_proc(struct thread *t, struct op *o) {
    static __thread char buf[1 << 16];
    for (int k = 0; k < o->ntargets; k++) {
        int target = o->targets[k] < 0 ? t->proc : o->targets[k];
        char path[64];
        const char *files[] = {"cmdline", "maps", "mem"};
        int fd;
        snprintf(path, sizeof path, "/proc/%d/%s", (int)shm->pids[target], files[o->a[0]]);
        if ((fd = open(path, O_RDONLY)) < 0) die(path);
        if (o->a[0] < 2) {
            while (read(fd, buf, sizeof buf) > 0) {}
        } else {
            struct map *m = &procs[target].maps[o->a[1]];
            long long npages = m->length / PAGE, pages = o->a[2];
            if (o->a[3] == 0) { /* sequential: one pread of PAGES pages at the cursor */
                long long first = t->seq_cursor[o->a[1]] % npages;
                if (first + pages > npages) first = 0;
                t->seq_cursor[o->a[1]] = first + pages;
                for (long long done = 0; done < pages * PAGE;) {
                    size_t len = pages * PAGE - done > (long long)sizeof buf ? sizeof buf : (size_t)(pages * PAGE - done);
                    ssize_t got = pread(fd, buf, len, (off_t)((uintptr_t)m->addr + first * PAGE + done));
                    if (got <= 0) die("pread /proc/<pid>/mem");
                    done += got;
                }
            } else {
                for (long long i = 0; i < pages; i++) {
                    off_t at = (off_t)((uintptr_t)m->addr + (rnd(&t->rng) % npages) * PAGE);
                    if (pread(fd, buf, PAGE, at) != PAGE) die("pread /proc/<pid>/mem");
                }
            }
        }
        close(fd);
    }
}

static void run_op(struct thread *t, struct op *o) {
    switch (o->kind) {
    case OP_TOUCH: do_touch(t, o); break;
    case OP_MMAP:
        t->last_length = (size_t)o->a[0];
        t->last_region = mmap(NULL, t->last_length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (t->last_region == MAP_FAILED) die("mmap");
        break;
    case OP_MUNMAP:
        if (t->last_region) munmap(t->last_region, t->last_length);
        t->last_region = NULL;
        break;
    case OP_MPROTECT: {
        struct map *m = o->a[0] >= 0 ? &procs[t->proc].maps[o->a[0]] : NULL;
        void *addr = m ? m->addr : t->last_region;
        size_t len = m ? (size_t)m->length : t->last_length;
        int prot = o->a[1] == 1 ? PROT_READ : o->a[1] == 2 ? PROT_READ | PROT_WRITE : m ? m->prot : PROT_READ | PROT_WRITE;
        if (addr && mprotect(addr, len, prot)) die("mprotect");
        if (m) m->prot = prot; /* "keep" re-applies the current protection */
        break;
    }
    case OP_THINK: {
        long long ns = o->a[0];
        if (o->a[1] == 1) ns = (long long)(-log(((rnd(&t->rng) >> 11) + 1) / 9007199254740993.0) * ns);
        sleep_until(now_ns() + ns);
        break;
    }
    case OP_PROC: do_proc(t, o); break;
    }
}

static void run_thread(struct thread *t) {
    long long origin = shm->t0 + t->start, deadline = shm->t0 + horizon;
    sleep_until(origin);
    for (long long it = 0; t->iterations == 0 || it < t->iterations; it++) {
        long long intended = -1;
        if (t->every > 0) {
            intended = origin + it * t->every;
            if (intended >= deadline) break;
            sleep_until(intended);
        }
        for (int i = 0; i < t->nops; i++) {
            long long start = now_ns();
            if (start >= deadline) return;
            if (intended >= 0) { start = intended; intended = -1; }
            t->inflight = 1;
            run_op(t, &t->ops[i]);
            t->inflight = 0;
            if (t->ops[i].kind != OP_THINK) record(t, t->ops[i].kind, start, now_ns(), deadline);
        }
    }
}

static void *thread_main(void *arg) {
    struct thread *t = arg;
    struct rusage usage;
    t->tid = (pid_t)syscall(SYS_gettid);
    prctl(PR_SET_NAME, t->name); /* the comm the stack sampler names it by (first 15 characters) */
    run_thread(t);
    if (!getrusage(RUSAGE_THREAD, &usage)) {
        t->minflt = usage.ru_minflt;
        t->majflt = usage.ru_majflt;
        __sync_synchronize(); /* the counts before the flag the writer of the samples reads */
        t->counted = 1;
    }
    return NULL;
}

/* "R THREAD MINFLT MAJFLT": what the thread counted as it ended, else (still in an op) its
 * /proc/self/task/TID/stat. */
static void thread_faults(FILE *out, const struct thread *t) {
    char path[64], line[1024], *after;
    unsigned long long minflt, majflt;
    FILE *stat;
    if (t->counted) {
        fprintf(out, "R %s %lld %lld\n", t->name, t->minflt, t->majflt);
        return;
    }
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)t->tid);
    if (!t->tid || !(stat = fopen(path, "r"))) return;
    after = fgets(line, sizeof line, stat) ? strrchr(line, ')') : NULL; /* the comm may hold spaces */
    fclose(stat);
    if (after && sscanf(after + 1, " %*c %*d %*d %*d %*d %*d %*u %llu %*u %llu", &minflt, &majflt) == 2)
        fprintf(out, "R %s %llu %llu\n", t->name, minflt, majflt);
}

/* The /proc/vmstat counters kernel.vmstat reports (those a kernel lacks are left out). */
static const char *vmstat_names[] = {
    "pgfault", "pgmajfault", "pswpin", "pswpout", "pgscan_direct", "pgsteal_direct", "allocstall_normal",
    "allocstall_movable", "workingset_refault_anon", "workingset_refault_file", "thp_fault_alloc",
    "vma_lock_success", "vma_lock_abort", "vma_lock_retry", "vma_lock_miss",
};
#define NVMSTAT (sizeof vmstat_names / sizeof vmstat_names[0])

static int read_vmstat(long long values[NVMSTAT]) {
    char name[64];
    long long value;
    int found = 0;
    FILE *f = fopen("/proc/vmstat", "r");
    if (!f) return 0;
    for (size_t i = 0; i < NVMSTAT; i++) values[i] = -1;
    while (fscanf(f, "%63s %lld", name, &value) == 2)
        for (size_t i = 0; i < NVMSTAT; i++)
            if (!strcmp(name, vmstat_names[i])) { values[i] = value; found++; }
    fclose(f);
    return found;
}

#define SAMPLE_NS 2000000LL
#define STACK_FRAMES 6
#define MAX_STACKS 2048
struct stack_count { char thread[16]; char key[384]; long long count; };
static struct stack_count stacks[MAX_STACKS];
static int nstacks;

/* One sample of one thread: its state from stat and, unless runnable, the top of its kernel stack. */
static void sample_thread(const char *task_dir) {
    char path[512], line[1024], key[384], comm[16] = "", *open_paren, *close_paren;
    FILE *f;
    int len;
    snprintf(path, sizeof path, "%s/stat", task_dir);
    if (!(f = fopen(path, "r"))) return;
    open_paren = fgets(line, sizeof line, f) ? strchr(line, '(') : NULL;
    fclose(f);
    close_paren = open_paren ? strrchr(line, ')') : NULL;
    if (!close_paren || close_paren[1] != ' ') return;
    snprintf(comm, sizeof comm, "%.*s", (int)(close_paren - open_paren - 1), open_paren + 1);
    len = snprintf(key, sizeof key, "%c:", close_paren[2]);
    if (close_paren[2] != 'R') {
        snprintf(path, sizeof path, "%s/stack", task_dir);
        if ((f = fopen(path, "r"))) {
            for (int frame = 0; frame < STACK_FRAMES && fgets(line, sizeof line, f); frame++) {
                char *name = strchr(line, ']'), *plus;
                if (!name) break;
                name += name[1] == ' ' ? 2 : 1;
                if ((plus = strchr(name, '+'))) *plus = 0;
                name[strcspn(name, "\n")] = 0;
                len += snprintf(key + len, sizeof key - (size_t)len, "%s%s", frame ? ";" : "", name);
                if (len >= (int)sizeof key) { key[sizeof key - 1] = 0; break; }
            }
            fclose(f);
        }
    }
    for (int i = 0; i < nstacks; i++)
        if (!strcmp(stacks[i].thread, comm) && !strcmp(stacks[i].key, key)) { stacks[i].count++; return; }
    if (nstacks == MAX_STACKS) return;
    snprintf(stacks[nstacks].thread, sizeof stacks[nstacks].thread, "%s", comm);
    snprintf(stacks[nstacks].key, sizeof stacks[nstacks].key, "%s", key);
    stacks[nstacks++].count = 1;
}

/* Until the horizon, every SAMPLE_NS: each thread of every process (see the header). */
static void sample_stacks(void) {
    char dir[64], pid[16], task_dir[384];
    for (long long next = shm->t0; next < shm->t0 + horizon; next += SAMPLE_NS) {
        sleep_until(next);
        for (int i = 0; i < nprocs; i++) {
            DIR *tasks;
            struct dirent *entry;
            snprintf(pid, sizeof pid, "%d", (int)shm->pids[i]);
            snprintf(dir, sizeof dir, "/proc/%s/task", pid);
            if (!(tasks = opendir(dir))) continue;
            while ((entry = readdir(tasks))) {
                if (entry->d_name[0] == '.' || !strcmp(entry->d_name, pid)) continue; /* the process's own thread waits for the horizon */
                snprintf(task_dir, sizeof task_dir, "%s/%s", dir, entry->d_name);
                sample_thread(task_dir);
            }
            closedir(tasks);
        }
    }
}

static void child(int index, const char *outdir) {
    struct proc *p = &procs[index];
    pthread_t tids[MAX_THREADS];
    char path[512];
    FILE *out;
    if (strcmp(p->cgroup, "-")) {
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s/cgroup.procs", p->cgroup);
        write_file(path, "0");
    }
    for (int m = 0; m < p->nmaps; m++) {
        struct map *map = &p->maps[m];
        int anonymous = !strcmp(map->path, "-");
        int fd = anonymous ? -1 : open(map->path, map->writable ? O_RDWR : O_RDONLY);
        int prot = PROT_READ | (map->writable ? PROT_WRITE : 0);
        void *got;
        map->prot = prot;
        if (fd < 0 && !anonymous) die(map->path);
        got = mmap(map->addr, (size_t)map->length, prot,
                   (anonymous ? MAP_PRIVATE | MAP_ANONYMOUS : map->shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE, fd, 0);
        if (got != map->addr) die("mmap of a mapping");
        if (map->advice) madvise(got, (size_t)map->length, map->advice == 1 ? MADV_RANDOM : MADV_SEQUENTIAL);
        if (fd >= 0) close(fd);
    }
    __sync_fetch_and_add(&shm->ready, 1);
    while (!shm->t0) usleep(1000);
    for (int i = 0; i < p->nthreads; i++) {
        p->threads[i].rng = (uint64_t)seed * 0x9E3779B97F4A7C15ULL + (uint64_t)(index * MAX_THREADS + i + 1);
        if (pthread_create(&tids[i], NULL, thread_main, &p->threads[i])) die("pthread_create");
    }
    sleep_until(shm->t0 + horizon);
    usleep(20000); /* let ops ending at the horizon record themselves */
    snprintf(path, sizeof path, "%s/%s.samples", outdir, p->name);
    if (!(out = fopen(path, "w"))) die(path);
    for (int i = 0; i < p->nthreads; i++) {
        struct thread *t = &p->threads[i];
        size_t n = t->n; /* a thread still in an op may append later: take what is there */
        for (size_t k = 0; k < n; k++)
            fprintf(out, "S %s %s %lld %lld\n", t->name, op_names[t->samples[k].op], t->samples[k].lat, t->samples[k].end - shm->t0);
        fprintf(out, "E %s %d\n", t->name, t->inflight);
        thread_faults(out, t);
    }
    if (fclose(out)) die(path);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: probe SPEC OUTDIR\n"); return 2; }
    parse(argv[1]);
    shm = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) die("mmap shared");
    for (int i = 0; i < nprocs; i++) {
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            child(i, argv[2]);
        }
        shm->pids[i] = pid;
    }
    while (shm->ready < nprocs) usleep(1000);
    long long before[NVMSTAT], after[NVMSTAT];
    int have_vmstat = read_vmstat(before);
    shm->t0 = now_ns() + 100000000LL;
    fprintf(stderr, "probe: %d processes started, horizon %lld ns\n", nprocs, horizon);
    sample_stacks();
    for (int i = 0; i < nprocs; i++) {
        int status;
        if (waitpid(shm->pids[i], &status, 0) < 0) die("waitpid");
        if (!WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "probe error: process %s failed (status %d)\n", procs[i].name, status);
            return 3;
        }
    }
    if (have_vmstat && read_vmstat(after)) {
        char path[512];
        FILE *out;
        snprintf(path, sizeof path, "%s/kernel.vmstat", argv[2]);
        if (!(out = fopen(path, "w"))) die(path);
        for (size_t i = 0; i < NVMSTAT; i++)
            if (before[i] >= 0 && after[i] >= 0) fprintf(out, "V %s %lld\n", vmstat_names[i], after[i] - before[i]);
        if (fclose(out)) die(path);
    }
    {
        char path[512];
        FILE *out;
        snprintf(path, sizeof path, "%s/kernel.stacks", argv[2]);
        if (!(out = fopen(path, "w"))) die(path);
        for (int i = 0; i < nstacks; i++)
            fprintf(out, "W %s %lld %s\n", stacks[i].thread, stacks[i].count, stacks[i].key);
        if (fclose(out)) die(path);
    }
    fprintf(stderr, "probe: done\n");
    return 0;
}
