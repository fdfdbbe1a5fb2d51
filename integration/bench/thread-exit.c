/*
 * thread-exit.c: what a second, idle thread costs an init at exit.
 *
 * A minimal init: blocks every signal, reads them from a signalfd, forwards
 * each to the app's group, reaps on SIGCHLD and exits with the app's code,
 * with THREADS extra threads asleep in epoll_wait (drainit's lifecycle
 * thread is one). Used to tell the cost of the second thread from the rest
 * of drainit in SIGTERM-to-exit (docs/performance.md):
 *
 *   gcc -O2 -static -pthread -o /tmp/thread-exit integration/bench/thread-exit.c
 *   gcc -O2 -static -o /tmp/probe integration/bench/probe.c
 *   mkfifo /tmp/fifo
 *   for t in 0 1; do /tmp/probe sigterm 90 /tmp/fifo -- \
 *       /tmp/thread-exit $t /tmp/probe app /tmp/fifo | sort -n | sed -n 45p; done
 *
 * (each line: the median SIGTERM-to-exit in µs; prefix `taskset -c 0` to
 * pin everything to one CPU.)
 *
 * With EARLY=1 in the environment the threads do not wait to be killed:
 * the first forwarded signal (the SIGTERM) tells them to exit, and the
 * init joins them before it exits itself, as if drainit's lifecycle
 * retired the moment the stop began. It costs about as much (SETTLE_MS=20,
 * medians of 90 in two runs: 451 and 496 µs with no thread, 523 and 587
 * killed by the exit, 524 and 576 retired early): a thread that ran on
 * another CPU leaves that CPU in the address space's CPU mask, and the
 * exit's TLB flush still interrupts it.
 *
 *   EARLY=1 SETTLE_MS=20 /tmp/probe sigterm 90 /tmp/fifo -- \
 *       /tmp/thread-exit 1 /tmp/probe app /tmp/fifo | sort -n | sed -n 45p
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int retire = -1; /* an eventfd: readable once the threads are to exit */

static void *idle(void *arg) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, retire, &ev);
    epoll_wait(ep, &ev, 1, -1);
    syscall(SYS_exit, 0);
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int threads = atoi(argv[1]);
    int early = getenv("EARLY") != 0;
    pthread_t tids[64];
    if (threads > 64)
        threads = 64;
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, 0);
    int sfd = signalfd(-1, &all, SFD_CLOEXEC);
    retire = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
    pid_t app = fork();
    if (app == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, 0);
        setpgid(0, 0);
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    for (int i = 0; i < threads; i++)
        pthread_create(&tids[i], 0, idle, 0);
    int told = 0;
    for (;;) {
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) != sizeof si)
            continue;
        if (si.ssi_signo != SIGCHLD) {
            kill(-app, si.ssi_signo);
            if (early && !told) {
                uint64_t n = (uint64_t)threads;
                told = write(retire, &n, sizeof n) == sizeof n;
            }
            continue;
        }
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            if (p == app) {
                for (int i = 0; early && told && i < threads; i++)
                    pthread_join(tids[i], 0);
                _exit(WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st));
            }
    }
}
