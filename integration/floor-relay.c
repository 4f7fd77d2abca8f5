/*
 * The cheapest user-space relay: the floor integration/floor.py measures a proxy against.
 *
 *   floor-relay tcp LISTEN_PORT TARGET_PORT   accept on 127.0.0.1, one upstream connection each
 *   floor-relay udp LISTEN_PORT TARGET_PORT   the first sender's datagrams to the target, back
 *   floor-relay proxy HTTP_PORT SOCKS_PORT    HTTP CONNECT on one port and SOCKS5 CONNECT
 *                                             (no authentication, IPv4) on the other, to the
 *                                             127.0.0.1 port the request names
 *
 * One thread, one level-triggered epoll set, and per readiness one read and one write: no
 * parsing beyond finding where a request ends, no policy, no allocation after start. Whatever
 * a proxy costs beyond this relay is its own work; what this relay costs is the extra hop's
 * system calls and wake-ups. `proxy` adds the bare minimum of each protocol, in the order a
 * proxy must keep: read the whole request, dial, answer (SOCKS5's method choice is sent on
 * accept, as `serve` does). What a client's CPU and round trips for that exchange cost on top
 * of the hop then shows as this relay's ratio to direct, with no proxy work in it.
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

/* `proxy` mode: what a client fd still owes before its tunnel is up. */
enum { RELAY, CONNECT, SOCKS };
#define HS_MAX 256
static unsigned char state[MAX_FDS];
static unsigned char hs[MAX_FDS][HS_MAX];
static unsigned short hs_len[MAX_FDS];

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

static int listener(int port) {
    int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in at = loopback(port);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (void *)&at, sizeof at) < 0 || listen(ls, 4096) < 0) die("listen");
    return ls;
}

/* The next connection on `ls`, with TCP_NODELAY as every tunnel socket of `serve` has it. */
static int take(int ls) {
    int one = 1, c = accept(ls, NULL, NULL);
    if (c < 0 || c >= MAX_FDS) die("accept");
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

/* A blocking connect to 127.0.0.1:port (loopback completes it inside the call), TCP_NODELAY;
 * -1 if refused. */
static int dial(int port) {
    int one = 1, u = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = loopback(port);
    if (u < 0 || u >= MAX_FDS) die("socket");
    if (connect(u, (void *)&to, sizeof to) < 0) {
        close(u);
        return -1;
    }
    setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return u;
}

/* Relays between c and u from now on. */
static void link_pair(int ep, int c, int u) {
    peer[c] = u;
    peer[u] = c;
    watch(ep, u);
}

static void close_pair(int fd) {
    int other = peer[fd];
    if (other >= 0) {
        peer[other] = -1;
        state[other] = RELAY;
        close(other);
    }
    peer[fd] = -1;
    state[fd] = RELAY;
    close(fd);
}

/* One read from a relayed fd, written whole to its peer; EOF or an error closes both. A
 * descriptor closed earlier in the same epoll batch (its event stale, its number maybe taken
 * by a new connection) is skipped or finds nothing to read, never blocks. */
static void pass_on(int fd) {
    if (peer[fd] < 0) return;
    ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (got < 0 && errno == EAGAIN) return;
    if (got <= 0) {
        close_pair(fd);
        return;
    }
    /* Blocking write: loopback takes a small response at once. */
    for (ssize_t off = 0; off < got;) {
        ssize_t w = write(peer[fd], buf + off, got - off);
        if (w <= 0) break;
        off += w;
    }
}

static _Noreturn void tcp(int listen_port, int target_port) {
    int ep = epoll_create1(0), ls = listener(listen_port);
    watch(ep, ls);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c = take(ls), u = dial(target_port);
                if (u < 0) die("connect");
                watch(ep, c);
                link_pair(ep, c, u);
                continue;
            }
            pass_on(fd);
        }
    }
}

/* Where the handshake in hs[fd] ends and which port it names: 0 while incomplete, -1 when it
 * is not one this relay takes. */
static int handshake_end(int fd, int *port) {
    unsigned char *b = hs[fd];
    int n = hs_len[fd];
    if (state[fd] == CONNECT) {
        for (int i = 3; i < n; i++)
            if (memcmp(b + i - 3, "\r\n\r\n", 4) == 0) {
                char *colon = memchr(b, ':', i);
                *port = colon ? atoi(colon + 1) : 0;
                return *port > 0 && *port <= 65535 ? i + 1 : -1;
            }
        return n == HS_MAX ? -1 : 0;
    }
    /* Greeting (VER NMETHODS METHODS...), then VER CMD RSV ATYP=1 ADDR(4) PORT(2). */
    if (n < 2) return 0;
    if (b[0] != 5) return -1;
    int req = 2 + b[1];
    if (n < req + 10) return 0;
    if (b[req] != 5 || b[req + 1] != 1 || b[req + 3] != 1) return -1;
    *port = b[req + 8] << 8 | b[req + 9];
    return req + 10;
}

static const char http_200[] = "HTTP/1.1 200 Connection established\r\n\r\n";
static const unsigned char socks_ok[] = {5, 0, 0, 1, 127, 0, 0, 1, 0, 0};

static _Noreturn void proxy(int http_port, int socks_port) {
    int ep = epoll_create1(0), http = listener(http_port), socks = listener(socks_port);
    for (int fd = 0; fd < MAX_FDS; fd++) peer[fd] = -1;
    watch(ep, http);
    watch(ep, socks);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == http || fd == socks) {
                int c = take(fd);
                state[c] = fd == http ? CONNECT : SOCKS;
                hs_len[c] = 0;
                if (fd == socks) write(c, "\x05\x00", 2);
                watch(ep, c);
                continue;
            }
            if (state[fd] != RELAY) {
                ssize_t got = recv(fd, hs[fd] + hs_len[fd], HS_MAX - hs_len[fd], MSG_DONTWAIT);
                if (got < 0 && errno == EAGAIN) continue;
                if (got <= 0) {
                    close_pair(fd);
                    continue;
                }
                hs_len[fd] += got;
                int port, end = handshake_end(fd, &port);
                if (end == 0) continue;
                if (end < 0) {
                    close_pair(fd);
                    continue;
                }
                int u = dial(port);
                if (u < 0) {
                    close_pair(fd);
                    continue;
                }
                if (end < hs_len[fd]) write(u, hs[fd] + end, hs_len[fd] - end);
                if (state[fd] == CONNECT) write(fd, http_200, sizeof http_200 - 1);
                else write(fd, socks_ok, sizeof socks_ok);
                state[fd] = RELAY;
                link_pair(ep, fd, u);
                continue;
            }
            pass_on(fd);
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
    int known = argc == 4 && (strcmp(argv[1], "tcp") == 0 || strcmp(argv[1], "udp") == 0 ||
                              strcmp(argv[1], "proxy") == 0);
    if (!known) {
        fprintf(stderr, "usage: floor-relay tcp|udp LISTEN_PORT TARGET_PORT\n"
                        "       floor-relay proxy HTTP_PORT SOCKS_PORT\n");
        return 2;
    }
    int listen_port = atoi(argv[2]), target_port = atoi(argv[3]);
    if (strcmp(argv[1], "proxy") == 0) proxy(listen_port, target_port);
    if (strcmp(argv[1], "tcp") == 0) tcp(listen_port, target_port);
    udp(listen_port, target_port);
}
