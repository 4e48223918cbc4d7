/*
 * The kernel's cost of one delivery (issue 18): one unbatched write of a
 * 260-byte frame to one of 4,000 loopback TCP sockets whose reader is
 * another process, at 40,000 writes/s for 10 s, as a chat instance writes
 * a message to each member's socket. Prints the sender's CPU (utime +
 * stime, getrusage) per write in microseconds: the floor our own CPU per
 * delivery is compared with, measured in the same run as the chat's.
 *
 *   kernel_floor [sockets=4000] [writes_per_s=40000] [seconds=10] [bytes=260]
 *
 * Prints one JSON line: {"sockets":…,"writes":…,"cpu_s":…,"us_per_write":…}.
 * Built by scripts/bench.sh with `cc -O2`.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

/* The reader: accepts `n` connections and drains them until killed. */
static void reader(int listener, int n) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    for (int i = 0; i < n; i++) {
        int c = accept(listener, NULL, NULL);
        if (c < 0) { perror("accept"); exit(1); }
        ev.data.fd = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    }
    struct epoll_event ready[256];
    char buf[65536];
    for (;;) {
        int k = epoll_wait(ep, ready, 256, -1);
        for (int i = 0; i < k; i++)
            while (read(ready[i].data.fd, buf, sizeof buf) == (ssize_t)sizeof buf) {}
    }
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4000;
    int rate = argc > 2 ? atoi(argv[2]) : 40000;
    int seconds = argc > 3 ? atoi(argv[3]) : 10;
    int bytes = argc > 4 ? atoi(argv[4]) : 260;
    if (n <= 0 || rate <= 0 || seconds <= 0 || bytes <= 0 || bytes > 4096) {
        fprintf(stderr, "usage: kernel_floor [sockets] [writes/s] [seconds] [bytes<=4096]\n");
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, len) || listen(listener, 4096) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) reader(listener, n);
    int *fds = malloc(sizeof(int) * n);
    int one = 1;
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fds[i], (struct sockaddr *)&addr, sizeof addr)) { perror("connect"); return 1; }
    }
    char frame[4096];
    memset(frame, 'x', sizeof frame);
    /* Paced in 1 ms steps, as a hub writes a message to its members. */
    long total = (long)rate * seconds, done = 0;
    double start = now_s(), cpu0 = cpu_s();
    while (done < total) {
        long due = (long)((now_s() - start) * rate) + 1;
        if (due > total) due = total;
        for (; done < due; done++)
            if (write(fds[done % n], frame, bytes) != bytes) { perror("write"); return 1; }
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    double cpu = cpu_s() - cpu0, wall = now_s() - start;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("{\"sockets\":%d,\"writes\":%ld,\"bytes\":%d,\"wall_s\":%.3f,\"cpu_s\":%.3f,"
           "\"us_per_write\":%.3f}\n",
           n, done, bytes, wall, cpu, cpu * 1e6 / done);
    return 0;
}
