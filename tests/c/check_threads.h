/*
 * The checks of the C test programs whose threads check too (concurrency.c,
 * handles.c); tests/c/check.h is the main-thread-only kind. The counters
 * are locked. A failed CHECK prints "NAME.c:LINE: FAILED expr (last error:
 * ...)" and the program goes on (it exits 1 at the end); must() stops it at
 * once when a setup call fails. Define CHECK_NAME (the program's name, as
 * in "handles") before including this.
 */
#ifndef SOCKSERV_TEST_CHECK_THREADS_H
#define SOCKSERV_TEST_CHECK_THREADS_H

#include "sockserv.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t check_lock = PTHREAD_MUTEX_INITIALIZER;
static int checks, failures;

static void check_at(int ok, const char *what, int line)
{
    pthread_mutex_lock(&check_lock);
    checks++;
    if (!ok) {
        char detail[256] = "";
        sockserv_last_error(detail, sizeof detail);
        failures++;
        fprintf(stderr, CHECK_NAME ".c:%d: FAILED %s (last error: %s)\n", line, what, detail);
    }
    pthread_mutex_unlock(&check_lock);
}
#define CHECK(e) check_at((e) != 0, #e, __LINE__)

static void must(sockserv_result rc, const char *what)
{
    if (rc != SOCKSERV_OK) {
        char detail[256] = "";
        sockserv_last_error(detail, sizeof detail);
        fprintf(stderr, CHECK_NAME ": %s: %s (%s)\n", what, sockserv_strerror(rc), detail);
        exit(1);
    }
}

#endif
