/*
 * echo_server: the cheapest possible ONC RPC server over UDP, to measure
 * the load generator's own ceiling.  It answers every datagram with a
 * successful empty reply carrying the call's xid (no decoding), reading
 * and writing up to 64 datagrams per system call (recvmmsg/sendmmsg).
 *
 * usage: echo_server PORT      (binds 127.0.0.1:PORT, runs until killed)
 *
 * Build: gcc -O2 -o echo_server echo_server.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: echo_server PORT\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int big = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("echo_server: bind");
        return 1;
    }
    static unsigned char in[BATCH][2048], out[BATCH][24];
    struct sockaddr_in from[BATCH];
    struct iovec iin[BATCH], iout[BATCH];
    struct mmsghdr rm[BATCH], sm[BATCH];
    /* REPLY, MSG_ACCEPTED, verifier AUTH_NONE with no body, SUCCESS */
    static const uint32_t tail[5] = {0, 0, 0, 0, 0};
    for (int i = 0; i < BATCH; i++) {
        memcpy(out[i] + 4, tail, sizeof tail);
        out[i][7] = 1;
    }
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iin[i] = (struct iovec){in[i], sizeof in[i]};
            memset(&rm[i], 0, sizeof rm[i]);
            rm[i].msg_hdr.msg_iov = &iin[i];
            rm[i].msg_hdr.msg_iovlen = 1;
            rm[i].msg_hdr.msg_name = &from[i];
            rm[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(s, rm, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0)
            continue;
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (rm[i].msg_len < 4)
                continue;
            memcpy(out[k], in[i], 4);
            iout[k] = (struct iovec){out[k], 24};
            memset(&sm[k], 0, sizeof sm[k]);
            sm[k].msg_hdr.msg_iov = &iout[k];
            sm[k].msg_hdr.msg_iovlen = 1;
            sm[k].msg_hdr.msg_name = &from[i];
            sm[k].msg_hdr.msg_namelen = rm[i].msg_hdr.msg_namelen;
            k++;
        }
        if (k)
            sendmmsg(s, sm, (unsigned)k, 0);
    }
}
