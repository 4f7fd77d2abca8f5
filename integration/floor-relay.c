/*
 * The cheapest user-space relay: the floor integration/floor.py measures a proxy against.
 *
 *   floor-relay tcp LISTEN_PORT TARGET_PORT   accept on 127.0.0.1, one upstream connection each
 *   floor-relay udp LISTEN_PORT TARGET_PORT   the first sender's datagrams to the target, back
 *
 * One thread, one level-triggered epoll set, and per readiness one read and one write: no
 * parsing, no policy, no allocation after start. Whatever a proxy costs beyond this relay is
 * its own work; what this relay costs is the extra hop's system calls and wake-ups.
 * Measurement tooling only (built by floor.py with the system's cc); never shipped.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536
static int peer[MAX_FDS];
static char buf[1 << 16];

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static _Noreturn void die(const char *what) {
    perror(what);
    exit(1);
}

static void watch(int ep, int fd) {
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

static _Noreturn void tcp(int listen_port, int target_port) {
    int one = 1, ep = epoll_create1(0);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in at = loopback(listen_port), to = loopback(target_port);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (void *)&at, sizeof at) < 0 || listen(ls, 4096) < 0) die("listen");
    watch(ep, ls);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c = accept(ls, NULL, NULL), u = socket(AF_INET, SOCK_STREAM, 0);
                if (c < 0 || u < 0 || c >= MAX_FDS || u >= MAX_FDS) die("accept");
                if (connect(u, (void *)&to, sizeof to) < 0) die("connect");
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                peer[c] = u;
                peer[u] = c;
                watch(ep, c);
                watch(ep, u);
                continue;
            }
            /* Closed earlier in this batch, with its peer: its event is stale. */
            if (peer[fd] < 0) continue;
            ssize_t got = read(fd, buf, sizeof buf);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                int other = peer[fd];
                peer[fd] = peer[other] = -1;
                close(other);
                close(fd);
                continue;
            }
            /* Blocking write: loopback takes a small response at once. */
            for (ssize_t off = 0; off < got;) {
                ssize_t w = write(peer[fd], buf + off, got - off);
                if (w <= 0) break;
                off += w;
            }
        }
    }
}

static _Noreturn void udp(int listen_port, int target_port) {
    int ep = epoll_create1(0);
    int down = socket(AF_INET, SOCK_DGRAM, 0), up = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in at = loopback(listen_port), to = loopback(target_port), from;
    if (bind(down, (void *)&at, sizeof at) < 0) die("bind");
    if (connect(up, (void *)&to, sizeof to) < 0) die("connect");
    socklen_t len = sizeof from;
    ssize_t got = recvfrom(down, buf, sizeof buf, 0, (void *)&from, &len);
    if (got < 0 || connect(down, (void *)&from, len) < 0) die("first datagram");
    send(up, buf, got, 0);
    watch(ep, down);
    watch(ep, up);
    struct epoll_event evs[2];
    for (;;) {
        int n = epoll_wait(ep, evs, 2, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (got >= 0) send(fd == down ? up : down, buf, got, 0);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "udp") != 0)) {
        fprintf(stderr, "usage: floor-relay tcp|udp LISTEN_PORT TARGET_PORT\n");
        return 2;
    }
    int listen_port = atoi(argv[2]), target_port = atoi(argv[3]);
    if (strcmp(argv[1], "tcp") == 0) tcp(listen_port, target_port);
    udp(listen_port, target_port);
}
