/*
 * Probes for integration/bench/run.sh (built with gcc -O2 -static at bench
 * time). Not part of the test suite: it prints figures, it asserts nothing.
 *
 *   probe app FIFO
 *       The "application". Installs handlers, opens FIFO for writing, writes
 *       one ready byte, then sleeps in sigsuspend. On SIGUSR1 the handler
 *       reads CLOCK_MONOTONIC first thing and writes the 8-byte timestamp
 *       (ns) to FIFO. SIGUSR2 makes it exit 0.
 *
 *   probe siglat N PAUSE_US FIFO -- CMD...
 *       The sender (runs outside the namespace). Creates FIFO, starts CMD
 *       (normally `unshare --pid --fork --mount-proc INIT... -- probe app
 *       FIFO`), waits for the ready byte, takes the target pid = the child of
 *       CMD's process (the init's host pid; with no init, the app itself),
 *       then N times: t0 = CLOCK_MONOTONIC, kill(target, SIGUSR1), wait for
 *       the app's timestamp t1, print t1 - t0 in microseconds (one line
 *       each), sleep PAUSE_US. Then prints "# cpu US" with the CPU time the
 *       target (the init) used per signal (from /proc/PID/schedstat). Ends
 *       with SIGUSR2 (the app exits).
 *
 *   probe sigterm N FIFO -- CMD...
 *       N times: clone(CLONE_NEWPID) a child that execs CMD (normally
 *       `INIT... -- probe app FIFO`), wait for the app's ready byte, then
 *       t0 = CLOCK_MONOTONIC, kill(init, SIGTERM), waitpid(init) = t1. The
 *       app dies of the SIGTERM it gets (default disposition). Prints one
 *       line per run: t1 - t0 in microseconds (SIGTERM to the init's exit
 *       being reaped by its parent). With SETTLE_MS=M in the environment
 *       it waits M ms after the ready byte before t0: the init has then
 *       finished starting (drainit's lifecycle thread is idle), as in a
 *       pod stopped long after its start; the CPUs may be idle too.
 *
 *   probe orphans N
 *       Run as the app, under an init that is PID 1 with its own /proc
 *       (`unshare --pid --fork --mount-proc INIT probe orphans N`). A middle
 *       child forks N grandchildren that block on a pipe, and exits: the N
 *       become orphans of PID 1. Once /proc/1/task/1/children lists all of
 *       them, t0 = CLOCK_MONOTONIC and the pipe is closed: they all exit at
 *       once. t1 = when PID 1's only child left is this app (every orphan
 *       reaped). Then, after 100 ms, counts the zombies left in the
 *       namespace. Prints "REAP_US LEFTOVER_ZOMBIES" on stdout, exits 0.
 *
 *   probe stamp FILE
 *       Reads CLOCK_MONOTONIC first thing in main and writes it to FILE.
 *
 *   probe startup N FILE -- CMD...
 *       N times: clone(CLONE_NEWPID) so the child is PID 1 of a fresh PID
 *       namespace; the child stores t0 = CLOCK_MONOTONIC in shared memory
 *       right before execv(CMD) (normally `INIT... -- probe stamp FILE`).
 *       Prints one line per run: "EXEC_TO_EXEC TOTAL" in microseconds, where
 *       EXEC_TO_EXEC = app's stamp - t0 and TOTAL = parent's waitpid return
 *       - t0 (the whole life of the init, app included).
 *
 * Statistics are computed by run.sh from these raw samples.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* ---------------------------------------------------------------- app -- */

static int ack_fd = -1;

static void on_usr1(int sig)
{
    int64_t t = now_ns();
    (void)sig;
    if (write(ack_fd, &t, sizeof t) != sizeof t)
        _exit(3);
}

static void on_usr2(int sig)
{
    (void)sig;
    _exit(0);
}

static int app(const char *fifo)
{
    struct sigaction sa;
    sigset_t block, wait_mask;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    /* Block both outside sigsuspend so the handler only runs there. */
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    sigdelset(&wait_mask, SIGUSR1);
    sigdelset(&wait_mask, SIGUSR2);

    ack_fd = open(fifo, O_WRONLY);
    if (ack_fd < 0)
        die("app: open fifo");
    if (write(ack_fd, "R", 1) != 1)
        die("app: ready");
    for (;;)
        sigsuspend(&wait_mask);
    return 0;
}

/* ------------------------------------------------------------- sender -- */

/* First child of pid (from /proc/PID/task/PID/children), or -1. */
static pid_t child_of(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return (pid_t)atoi(buf);
}

/* CPU time (ns) pid has run so far, from /proc/PID/schedstat; -1 if unknown. */
static int64_t cpu_ns(pid_t pid)
{
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return strtoll(buf, NULL, 10);
}

/* Reads exactly len bytes from fd, waiting at most timeout_ms overall. */
static int read_full(int fd, void *p, size_t len, int timeout_ms)
{
    size_t got = 0;
    while (got < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t n = read(fd, (char *)p + got, len - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static int siglat(int n, int pause_us, const char *fifo, char **cmd)
{
    unlink(fifo);
    if (mkfifo(fifo, 0600) != 0)
        die("mkfifo");
    pid_t outer = fork();
    if (outer < 0)
        die("fork");
    if (outer == 0) {
        execvp(cmd[0], cmd);
        die("exec");
    }
    /* O_RDWR on a FIFO never blocks on open (Linux) and keeps it readable
       even before the app has opened its end. */
    int fd = open(fifo, O_RDWR);
    if (fd < 0)
        die("open fifo");
    char ready;
    if (read_full(fd, &ready, 1, 10000) != 0 || ready != 'R') {
        fprintf(stderr, "siglat: app never became ready\n");
        kill(outer, SIGKILL);
        return 1;
    }
    pid_t target = child_of(outer);
    if (target <= 0) {
        fprintf(stderr, "siglat: cannot find the child of %d\n", outer);
        kill(outer, SIGKILL);
        return 1;
    }
    int lost = 0, acked = 0;
    int64_t cpu0 = cpu_ns(target);
    for (int i = 0; i < n; i++) {
        int64_t t0 = now_ns(), t1;
        if (kill(target, SIGUSR1) != 0)
            die("kill");
        if (read_full(fd, &t1, sizeof t1, 2000) != 0) {
            fprintf(stderr, "siglat: signal %d not acknowledged within 2s\n", i);
            if (++lost > 3)
                break;
            continue;
        }
        printf("%.2f\n", (t1 - t0) / 1000.0);
        acked++;
        if (pause_us > 0)
            usleep((useconds_t)pause_us);
    }
    int64_t cpu1 = cpu_ns(target);
    if (cpu0 >= 0 && cpu1 >= 0 && acked > 0)
        printf("# cpu %.2f\n", (cpu1 - cpu0) / 1000.0 / acked);
    kill(target, SIGUSR2);
    int status;
    alarm(10);
    waitpid(outer, &status, 0);
    unlink(fifo);
    return lost ? 1 : 0;
}

/* -------------------------------------------------------------- stamp -- */

static int stamp(const char *file)
{
    int64_t t = now_ns();
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, &t, sizeof t) != sizeof t)
        return 1;
    return 0;
}

/* ------------------------------------------------------------ startup -- */

static int startup(int n, const char *file, char **cmd)
{
    volatile int64_t *shared =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        die("mmap");
    for (int i = 0; i < n; i++) {
        unlink(file);
        pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
        if (pid < 0)
            die("clone(CLONE_NEWPID)");
        if (pid == 0) {
            shared[0] = now_ns();
            execv(cmd[0], cmd);
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid)
            die("waitpid");
        int64_t t_end = now_ns(), t0 = shared[0], t_app = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "startup: %s exited with status %#x\n", cmd[0], status);
            return 1;
        }
        int fd = open(file, O_RDONLY);
        if (fd < 0 || read(fd, &t_app, sizeof t_app) != sizeof t_app) {
            fprintf(stderr, "startup: the app wrote no stamp\n");
            return 1;
        }
        close(fd);
        printf("%.2f %.2f\n", (t_app - t0) / 1000.0, (t_end - t0) / 1000.0);
    }
    unlink(file);
    return 0;
}

/* ------------------------------------------------------------ sigterm -- */

static int sigterm(int n, const char *fifo, char **cmd)
{
    for (int i = 0; i < n; i++) {
        unlink(fifo);
        if (mkfifo(fifo, 0600) != 0)
            die("mkfifo");
        pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
        if (pid < 0)
            die("clone(CLONE_NEWPID)");
        if (pid == 0) {
            execv(cmd[0], cmd);
            _exit(127);
        }
        int fd = open(fifo, O_RDWR);
        if (fd < 0)
            die("open fifo");
        char ready;
        if (read_full(fd, &ready, 1, 10000) != 0 || ready != 'R') {
            fprintf(stderr, "sigterm: app never became ready\n");
            kill(pid, SIGKILL);
            return 1;
        }
        const char *settle = getenv("SETTLE_MS");
        if (settle)
            usleep((useconds_t)atoi(settle) * 1000);
        int64_t t0 = now_ns();
        if (kill(pid, SIGTERM) != 0)
            die("kill");
        int status;
        alarm(20);
        if (waitpid(pid, &status, 0) != pid)
            die("waitpid");
        alarm(0);
        int64_t t1 = now_ns();
        close(fd);
        printf("%.2f\n", (t1 - t0) / 1000.0);
    }
    unlink(fifo);
    return 0;
}

/* ------------------------------------------------------------ orphans -- */

/* Number of pids in /proc/1/task/1/children (zombies included). */
static int init_children(char *buf, size_t size)
{
    int fd = open("/proc/1/task/1/children", O_RDONLY);
    if (fd < 0)
        return -1;
    size_t got = 0;
    ssize_t r;
    while (got < size - 1 && (r = read(fd, buf + got, size - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = 0;
    int count = 0;
    for (char *p = buf; *p;) {
        while (*p == ' ' || *p == '\n')
            p++;
        if (!*p)
            break;
        count++;
        while (*p && *p != ' ' && *p != '\n')
            p++;
    }
    return count;
}

/* Processes in state Z in this PID namespace's /proc. */
static int zombies(void)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], buf[256];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0)
            continue;
        buf[r] = 0;
        char *paren = strrchr(buf, ')');
        if (paren && paren[1] == ' ' && paren[2] == 'Z')
            count++;
    }
    closedir(d);
    return count;
}

static int orphans(int n)
{
    int release[2];
    if (pipe(release) != 0)
        die("pipe");
    pid_t middle = fork();
    if (middle < 0)
        die("fork");
    if (middle == 0) {
        close(release[1]);
        for (int i = 0; i < n; i++) {
            pid_t p = fork();
            if (p < 0)
                die("fork orphan");
            if (p == 0) {
                char c;
                (void)!read(release[0], &c, 1);
                _exit(0);
            }
        }
        _exit(0);
    }
    close(release[0]);
    int status;
    if (waitpid(middle, &status, 0) != middle)
        die("waitpid middle");
    size_t size = (size_t)n * 12 + 4096;
    char *buf = malloc(size);
    if (!buf)
        die("malloc");
    /* Wait until PID 1 has adopted all N (and still has this app). */
    int64_t deadline = now_ns() + 10000000000LL;
    while (init_children(buf, size) < n + 1) {
        if (now_ns() > deadline) {
            fprintf(stderr, "orphans: PID 1 never adopted %d orphans\n", n);
            return 1;
        }
        usleep(1000);
    }
    int64_t t0 = now_ns();
    close(release[1]);
    while (init_children(buf, size) > 1) {
        if (now_ns() > t0 + 10000000000LL)
            break;
        usleep(100);
    }
    int64_t t1 = now_ns();
    usleep(100000);
    printf("%.0f %d\n", (t1 - t0) / 1000.0, zombies());
    fflush(stdout);
    return 0;
}

/* --------------------------------------------------------------- main -- */

static char **after_dashes(int argc, char **argv, int from)
{
    for (int i = from; i < argc; i++)
        if (strcmp(argv[i], "--") == 0 && i + 1 < argc)
            return argv + i + 1;
    fprintf(stderr, "missing -- CMD\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "stamp") == 0)
        return stamp(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "app") == 0)
        return app(argv[2]);
    if (argc >= 6 && strcmp(argv[1], "siglat") == 0)
        return siglat(atoi(argv[2]), atoi(argv[3]), argv[4], after_dashes(argc, argv, 5));
    if (argc >= 5 && strcmp(argv[1], "startup") == 0)
        return startup(atoi(argv[2]), argv[3], after_dashes(argc, argv, 4));
    if (argc >= 5 && strcmp(argv[1], "sigterm") == 0)
        return sigterm(atoi(argv[2]), argv[3], after_dashes(argc, argv, 4));
    if (argc >= 3 && strcmp(argv[1], "orphans") == 0)
        return orphans(atoi(argv[2]));
    fprintf(stderr, "usage: see the comment at the top of probe.c\n");
    return 2;
}
