// The header compiled as C++ (C++11, -Wpedantic): the extern "C" block,
// the enum and the macros work from C++, and the program links and runs.
#include "sockserv.h"

#include <cstdio>
#include <cstring>

static_assert(SOCKSERV_OK == 0, "SOCKSERV_OK is 0, so `if (rc)` tests for failure");
static_assert(SOCKSERV_ADDRSTRLEN >= 64, "room for an IPv6 address and port");

int main() {
    sockserv_config *config = nullptr;
    sockserv_result rc = sockserv_config_new(&config);
    if (rc != SOCKSERV_OK || config == nullptr) {
        std::fprintf(stderr, "sockserv_config_new: %s\n", sockserv_strerror(rc));
        return 1;
    }
    const char key[] = "key";
    rc = sockserv_config_set_auth_key(config, reinterpret_cast<const uint8_t *>(key),
                                      sizeof key - 1);
    sockserv_config_free(config);
    if (rc != SOCKSERV_OK)
        return 1;
    char version[32];
    std::snprintf(version, sizeof version, "%d.%d.%d", SOCKSERV_VERSION_MAJOR,
                  SOCKSERV_VERSION_MINOR, SOCKSERV_VERSION_PATCH);
    if (std::strcmp(version, sockserv_version()) != 0) {
        std::fprintf(stderr, "header %s, library %s\n", version, sockserv_version());
        return 1;
    }
    std::printf("header_cxx: ok (sockserv %s)\n", sockserv_version());
    return 0;
}
