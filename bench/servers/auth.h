/* The server's side of the sockserv / Python 3.12 handshake (PROTOCOL.md)
 * as a tiny state machine without I/O, shared by the blocking and the epoll
 * baseline. HMAC-SHA256 and its constant-time check come from libsockserv. */
#ifndef BENCH_AUTH_H
#define BENCH_AUTH_H

#include "common.h" /* first: it defines _GNU_SOURCE */

#include <sys/random.h>

#include "sockserv.h"

#define AUTH_MAX_FRAME 256
#define AUTH_OUT 64 /* room for any frame auth_start/auth_step writes */

enum { AUTH_WAIT_RESPONSE, AUTH_WAIT_CHALLENGE, AUTH_WAIT_WELCOME, AUTH_DONE };

struct auth {
    int state;
    uint8_t nonce[48]; /* "{sha256}" + 40 random bytes: our challenge body */
};

static inline size_t auth_frame(uint8_t *out, const void *a, size_t alen, const void *b, size_t blen) {
    store_be32(out, (uint32_t)(alen + blen));
    memcpy(out + 4, a, alen);
    if (blen) memcpy(out + 4 + alen, b, blen);
    return 4 + alen + blen;
}

/* Writes our challenge frame into out; returns its length (0: no entropy). */
static inline size_t auth_start(struct auth *a, uint8_t *out) {
    a->state = AUTH_WAIT_RESPONSE;
    memcpy(a->nonce, "{sha256}", 8);
    if (getrandom(a->nonce + 8, 40, 0) != 40) return 0;
    return auth_frame(out, "#CHALLENGE#", 11, a->nonce, sizeof a->nonce);
}

/* Feeds one handshake frame; the reply frame (if any) goes to out and its
 * length to *outlen. Returns 0 to go on, -1 to close after sending out. */
static inline int auth_step(struct auth *a, const char *key, const uint8_t *f, size_t n, uint8_t *out,
                            size_t *outlen) {
    const uint8_t *k = (const uint8_t *)key;
    size_t klen = strlen(key);
    uint8_t mac[32];
    *outlen = 0;
    switch (a->state) {
    case AUTH_WAIT_RESPONSE:
        if (n == 40 && !memcmp(f, "{sha256}", 8) &&
            sockserv_hmac_sha256_verify(k, klen, a->nonce, sizeof a->nonce, f + 8, 32) == SOCKSERV_OK) {
            *outlen = auth_frame(out, "#WELCOME#", 9, NULL, 0);
            a->state = AUTH_WAIT_CHALLENGE;
            return 0;
        }
        *outlen = auth_frame(out, "#FAILURE#", 9, NULL, 0);
        return -1;
    case AUTH_WAIT_CHALLENGE:
        if (n < 11 + 20 || memcmp(f, "#CHALLENGE#{sha256}", 19)) return -1;
        if (sockserv_hmac_sha256(k, klen, f + 11, n - 11, mac) != SOCKSERV_OK) return -1;
        *outlen = auth_frame(out, "{sha256}", 8, mac, sizeof mac);
        a->state = AUTH_WAIT_WELCOME;
        return 0;
    case AUTH_WAIT_WELCOME:
        if (n != 9 || memcmp(f, "#WELCOME#", 9)) return -1;
        a->state = AUTH_DONE;
        return 0;
    default:
        return -1;
    }
}

#endif
