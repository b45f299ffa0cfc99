/*
 * Deliberate bugs, so the harness can show that its sanitizer builds
 * really catch them: without these controls, a sanitized run that passes
 * might only mean nothing was watching.
 *
 *   sanitizer_control leak   a sockserv_config never freed (LeakSanitizer
 *                            sees the library's allocations too)
 *   sanitizer_control heap   a read past the end of a malloc'd buffer
 *   sanitizer_control ub     a signed integer overflow
 *   sanitizer_control race   two threads write one int unsynchronised
 */
#define _POSIX_C_SOURCE 200809L

#include "sockserv.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int shared;

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        shared++;
    return NULL;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "leak") == 0) {
        sockserv_config *config = NULL;
        if (sockserv_config_new(&config) != SOCKSERV_OK)
            return 2;
        config = NULL; /* the only pointer to it is gone */
        return 0;
    }
    if (strcmp(what, "heap") == 0) {
        volatile char *p = calloc(8, 1);
        char c = p[strlen(what) + 4]; /* "heap": p[8], one past the end */
        free((void *)p);
        return c == 42;
    }
    if (strcmp(what, "ub") == 0) {
        volatile int big = 2147483647;
        return big + argc > 0 ? 0 : 3;
    }
    if (strcmp(what, "race") == 0) {
        pthread_t a, b;
        pthread_create(&a, NULL, bump, NULL);
        pthread_create(&b, NULL, bump, NULL);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        return shared < 0;
    }
    fprintf(stderr, "usage: sanitizer_control leak|heap|ub|race\n");
    return 2;
}
