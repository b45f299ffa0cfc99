/*
 * A deliberate leak, so the harness can show that its valgrind command
 * really fails on one: without this control, a valgrind run that passes
 * might only mean valgrind was not looking.
 */
#include "sockserv.h"

#include <stdio.h>

int main(void)
{
    sockserv_config *config = NULL;
    if (sockserv_config_new(&config) != SOCKSERV_OK)
        return 2;
    config = NULL; /* the only pointer to it is gone: definitely lost */
    printf("leak_control: leaked one sockserv_config\n");
    return 0;
}
