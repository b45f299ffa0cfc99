/*
 * The checks the C test programs count: a failed one prints file:line, the
 * expression and the library's last error, and the program goes on (it
 * exits 1 at the end); setup that later checks need stops it at once.
 * Checks run on the main thread only (the counters are not locked).
 */
#ifndef SOCKSERV_TEST_CHECK_H
#define SOCKSERV_TEST_CHECK_H

#include "sockserv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int checks, failures;

/* The main thread's last error detail. */
static inline const char *detail(void)
{
    static char buf[1024];
    sockserv_last_error(buf, sizeof buf);
    return buf;
}

static inline int check_(int ok, const char *expr, const char *file, int line)
{
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "%s:%d: FAILED: %s\n  last error: %s\n", file, line, expr, detail());
    }
    return ok;
}

static inline int expect_rc_(sockserv_result got, sockserv_result want, const char *expr,
                             const char *file, int line)
{
    checks++;
    if (got != want) {
        failures++;
        fprintf(stderr, "%s:%d: FAILED: %s\n  returned %d (%s), expected %d (%s)\n"
                        "  last error: %s\n",
                file, line, expr, (int)got, sockserv_strerror(got), (int)want,
                sockserv_strerror(want), detail());
        return 0;
    }
    return 1;
}

static inline void require_ok_(sockserv_result got, const char *expr, const char *file, int line)
{
    if (got != SOCKSERV_OK) {
        fprintf(stderr, "%s:%d: setup failed: %s returned %d (%s)\n  last error: %s\n", file,
                line, expr, (int)got, sockserv_strerror(got), detail());
        exit(1);
    }
}

static inline void require_(int ok, const char *expr, const char *file, int line)
{
    if (!ok) {
        fprintf(stderr, "%s:%d: setup failed: %s (%s)\n", file, line, expr, strerror(errno));
        exit(1);
    }
}

#define CHECK(cond) check_((cond) ? 1 : 0, #cond, __FILE__, __LINE__)
#define EXPECT_RC(call, want) expect_rc_((call), (want), #call, __FILE__, __LINE__)
/* The last error of this thread mentions `text`. */
#define EXPECT_DETAIL(text) CHECK(strstr(detail(), (text)) != NULL)
/* Setup that later checks depend on: stop at once if it fails. */
#define REQUIRE_OK(call) require_ok_((call), #call, __FILE__, __LINE__)
#define REQUIRE(cond) require_((cond) ? 1 : 0, #cond, __FILE__, __LINE__)

/* A distinctive pointer, to show that an output was not written. */
#define UNTOUCHED ((void *)&checks)

static inline long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#endif
