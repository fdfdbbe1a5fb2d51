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
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static void *idle(void *arg) {
    int ep = epoll_create1(0);
    struct epoll_event ev;
    for (;;)
        epoll_wait(ep, &ev, 1, -1);
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int threads = atoi(argv[1]);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, 0);
    int sfd = signalfd(-1, &all, SFD_CLOEXEC);
    pid_t app = fork();
    if (app == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, 0);
        setpgid(0, 0);
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, 0, idle, 0);
    }
    for (;;) {
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) != sizeof si)
            continue;
        if (si.ssi_signo != SIGCHLD) {
            kill(-app, si.ssi_signo);
            continue;
        }
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            if (p == app)
                _exit(WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st));
    }
}
