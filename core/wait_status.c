/*
 * wait_status.c - a waitpid() status as text (wait_status.h).
 */
#include "wait_status.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

void fts_wait_status_describe(int status, char *text, size_t size)
{
    if (WIFEXITED(status)) {
        snprintf(text, size, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(text, size, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    } else {
        snprintf(text, size, "status %d", status);
    }
}
