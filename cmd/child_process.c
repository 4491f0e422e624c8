/*
 * child_process.c - starting, reaping and killing child processes (child_process.h).
 */
#include "child_process.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "signals.h"

/* Built with AddressSanitizer (gcc defines __SANITIZE_ADDRESS__, clang has __has_feature). */
#if defined(__SANITIZE_ADDRESS__)
#define FTS_CHILD_LEAK_CHECK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FTS_CHILD_LEAK_CHECK 1
#endif
#endif
#ifdef FTS_CHILD_LEAK_CHECK
#include <sanitizer/lsan_interface.h>
#endif

bool fts_child_spawn(fts_child_t *child, fts_child_main_fn run, void *arg, fts_error_t *err)
{
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        fts_signals_reset();
        int status = run(arg);
#ifdef FTS_CHILD_LEAK_CHECK
        /* _exit() skips LeakSanitizer's check at exit (exit() would run the parent's atexit
         * handlers in the child), so a forked child such as the transform worker would never
         * have its leaks reported: check here. Leaks end the child as they end any process
         * (the report on stderr, the sanitizer's failure exit status). */
        __lsan_do_leak_check();
#endif
        _exit(status);
    }
    child->pid = pid;
    return true;
}

static int exec_self(void *arg)
{
    /* execv's argv is char *const[] for historical reasons; POSIX promises it changes none
     * of the strings, so the const ones given are passed as they are. */
    char *const *argv = arg;
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "ftsync: cannot exec %s: %s\n", argv[1] ? argv[1] : argv[0], strerror(errno));
    return 1;
}

bool fts_child_spawn_self(fts_child_t *child, const char *const argv[], fts_error_t *err)
{
    return fts_child_spawn(child, exec_self, (void *)argv, err);
}

bool fts_child_keep_fd(int fd)
{
    if (fd != FTS_CHILD_FD && dup2(fd, FTS_CHILD_FD) < 0) {
        return false;
    }
    close_range(FTS_CHILD_FD + 1, ~0u, 0);
    return true;
}

bool fts_child_reap(fts_child_t *child, bool block, int *status)
{
    if (child->pid <= 0) {
        return false;
    }
    pid_t done;
    do {
        done = waitpid(child->pid, status, block ? 0 : WNOHANG);
    } while (done < 0 && errno == EINTR);
    if (done == child->pid) {
        child->pid = 0;
        return true;
    }
    if (done < 0 && (block || errno == ECHILD)) {
        child->pid = 0;
    }
    return false;
}

void fts_child_kill(const fts_child_t *child, int sig)
{
    if (child->pid > 0) {
        kill(child->pid, sig);
    }
}
