/*
 * tirpc_null: the stock libtirpc client (clnt_create + clnt_call) calling
 * NULL in a loop, one call at a time, for comparison with loadgen.
 * Run several processes side by side for a window larger than one.
 *
 * usage: tirpc_null HOST PROG VERS udp|tcp SECONDS
 * prints: calls ok failures
 *
 * Build: gcc -O2 -I/usr/include/tirpc -o tirpc_null tirpc_null.c -ltirpc
 */
#include <rpc/rpc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: tirpc_null HOST PROG VERS udp|tcp SECONDS\n");
        return 2;
    }
    CLIENT *clnt = clnt_create(argv[1], strtoul(argv[2], 0, 0), strtoul(argv[3], 0, 0), argv[4]);
    if (!clnt) {
        clnt_pcreateerror("tirpc_null");
        return 1;
    }
    struct timeval tv = {5, 0};
    double end = now() + atof(argv[5]);
    unsigned long ok = 0, bad = 0;
    while (now() < end) {
        if (clnt_call(clnt, 0, (xdrproc_t)xdr_void, NULL, (xdrproc_t)xdr_void, NULL, tv) == RPC_SUCCESS)
            ok++;
        else
            bad++;
    }
    printf("%lu %lu\n", ok, bad);
    clnt_destroy(clnt);
    return 0;
}
