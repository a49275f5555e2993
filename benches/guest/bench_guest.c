/*
 * bench_guest: the guest side of compatrun's per-call benchmarks (benches/syscalls.rs).
 *
 * Usage: bench_guest OP N [PATH]
 *
 * Runs operation OP N times and prints one line to stdout:
 *
 *     <elapsed nanoseconds> <check>
 *
 * The time is CLOCK_MONOTONIC around the loop only, measured inside the guest, so the
 * start-up of the process (and of compatrun around it) is not part of it. <check> says
 * what the last call returned, so the harness can confirm it measured what it meant to
 * (for example that uname really was emulated, or that getrandom really was refused):
 *
 *     getpid          ok
 *     uname           the release the guest saw (e.g. 2.6.32)
 *     open-close      ok
 *     fork-wait       ok
 *     fork-exec-wait  ok
 *     getrandom       ok, or ENOSYS (refused by the 2.6 persona's filter)
 *
 * Exit status 0 on success, 2 on a usage error, 1 if an operation failed unexpectedly.
 * Built by the benchmark with `cc -O2`; needs nothing but libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_getrandom
#define SYS_getrandom 318
#endif

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_guest: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void wait_ok(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            die("waitpid");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_guest: child failed (status %#x)\n", status);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_guest OP N [PATH]\n"
                        "  OP: getpid uname open-close fork-wait fork-exec-wait getrandom\n");
        return 2;
    }
    const char *op = argv[1];
    long n = strtol(argv[2], NULL, 10);
    const char *path = argc > 3 ? argv[3] : argv[0];
    if (n < 0)
        return 2;
    char check[80] = "ok";
    uint64_t t0, t1;

    if (strcmp(op, "getpid") == 0) {
        long r = 0;
        t0 = now_ns();
        for (long i = 0; i < n; i++)
            r += syscall(SYS_getpid);
        t1 = now_ns();
        if (n > 0 && r / n != getpid())
            return 1;
    } else if (strcmp(op, "uname") == 0) {
        struct utsname u;
        memset(&u, 0, sizeof u);
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (uname(&u) != 0)
                die("uname");
        }
        t1 = now_ns();
        snprintf(check, sizeof check, "%s", n > 0 ? u.release : "ok");
    } else if (strcmp(op, "open-close") == 0) {
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            long fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                die(path);
            syscall(SYS_close, fd);
        }
        t1 = now_ns();
    } else if (strcmp(op, "fork-wait") == 0) {
        fflush(stdout);
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid < 0)
                die("fork");
            if (pid == 0)
                _exit(0);
            wait_ok(pid);
        }
        t1 = now_ns();
    } else if (strcmp(op, "fork-exec-wait") == 0) {
        fflush(stdout);
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid < 0)
                die("fork");
            if (pid == 0) {
                execl("/bin/true", "true", (char *)NULL);
                _exit(127);
            }
            wait_ok(pid);
        }
        t1 = now_ns();
    } else if (strcmp(op, "getrandom") == 0) {
        unsigned char buf[16];
        long r = 0;
        int err = 0;
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            r = syscall(SYS_getrandom, buf, sizeof buf, 1 /* GRND_NONBLOCK */);
            err = r < 0 ? errno : 0;
        }
        t1 = now_ns();
        if (n > 0 && r < 0) {
            if (err != ENOSYS) {
                errno = err;
                die("getrandom");
            }
            snprintf(check, sizeof check, "ENOSYS");
        }
    } else {
        fprintf(stderr, "bench_guest: unknown operation %s\n", op);
        return 2;
    }
    printf("%llu %s\n", (unsigned long long)(t1 - t0), check);
    return 0;
}
