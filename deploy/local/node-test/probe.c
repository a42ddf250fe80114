/*
 * dbop-probe: a tiny static test helper for the real node's integration tests (testkit/tests/node.rs).
 * The image localhost/db-operator/probe:<hash> holds only this binary (no shell, no libc at run time);
 * deploy/local/node builds it with `gcc -static` and imports it into containerd.
 *
 *   probe serve PORT          answer every TCP connection on PORT with "probe <hostname>\n" (HTTP/1.0)
 *   probe get HOST PORT       connect (HOST: IPv4 or a DNS name), print the first 4 KiB of the answer
 *   probe resolve NAME        print the IPv4 addresses of NAME (A query to /etc/resolv.conf's first
 *                             nameserver, trying the search domains when NAME has fewer than ndots dots)
 *   probe cat FILE            print FILE
 *   probe echo WORDS...       print WORDS
 *   probe sleep               sleep forever (default with no arguments)
 * Exit status 0 on success, 1 with a message on stderr otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int fail(const char *what) {
	fprintf(stderr, "probe: %s: %s\n", what, errno ? strerror(errno) : "failed");
	return 1;
}

static void on_term(int sig) { (void)sig; _exit(0); }

static int serve(int port) {
	char host[256] = "unknown", reply[512];
	gethostname(host, sizeof host - 1);
	int n = snprintf(reply, sizeof reply,
		"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nprobe %s\n", host);
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (s < 0) return fail("socket");
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return fail("bind");
	if (listen(s, 64) < 0) return fail("listen");
	fprintf(stderr, "probe: serving on :%d as %s\n", port, host);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) continue;
		char buf[1024];
		struct timeval tv = {.tv_sec = 1};
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		(void)!recv(c, buf, sizeof buf, 0); /* the request, if any */
		(void)!write(c, reply, n);
		close(c);
	}
}

/* Minimal DNS A lookup over UDP. Returns the number of addresses written to out. */
static int query_a(struct in_addr ns, const char *name, struct in_addr *out, int max) {
	unsigned char q[512], r[1500];
	int len = 12, id = getpid() & 0xffff;
	memset(q, 0, sizeof q);
	q[0] = id >> 8; q[1] = id & 0xff; q[2] = 0x01; /* RD */ q[5] = 1; /* QDCOUNT */
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		int l = dot ? (int)(dot - p) : (int)strlen(p);
		if (l == 0 || l > 63 || len + l + 6 > (int)sizeof q) return -1;
		q[len++] = l; memcpy(q + len, p, l); len += l;
		p += l; if (*p == '.') p++;
	}
	q[len++] = 0; q[len++] = 0; q[len++] = 1; q[len++] = 0; q[len++] = 1; /* A, IN */
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0) return -1;
	struct timeval tv = {.tv_sec = 2};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr = ns};
	int n = -1;
	for (int attempt = 0; attempt < 3 && n < 0; attempt++) {
		if (sendto(s, q, len, 0, (struct sockaddr *)&a, sizeof a) < 0) break;
		n = recv(s, r, sizeof r, 0);
	}
	close(s);
	if (n < 12 || r[0] != q[0] || r[1] != q[1] || (r[3] & 0x0f) != 0) return 0;
	int an = (r[6] << 8) | r[7], off = len, found = 0;
	for (int i = 0; i < an && off < n && found < max; i++) {
		if ((r[off] & 0xc0) == 0xc0) off += 2;
		else { while (off < n && r[off]) off += r[off] + 1; off++; }
		if (off + 10 > n) break;
		int type = (r[off] << 8) | r[off + 1], rdlen = (r[off + 8] << 8) | r[off + 9];
		off += 10;
		if (type == 1 && rdlen == 4 && off + 4 <= n) memcpy(&out[found++], r + off, 4);
		off += rdlen;
	}
	return found;
}

static int resolve(const char *name, struct in_addr *out, int max) {
	if (inet_pton(AF_INET, name, out) == 1) return 1;
	struct in_addr ns = {0};
	char search[8][256], line[1024];
	int nsearch = 0, ndots = 1, have_ns = 0;
	FILE *f = fopen("/etc/resolv.conf", "r");
	if (!f) return -1;
	while (fgets(line, sizeof line, f)) {
		char *tok = strtok(line, " \t\r\n");
		if (!tok) continue;
		if (!strcmp(tok, "nameserver") && !have_ns) {
			char *v = strtok(NULL, " \t\r\n");
			if (v && inet_pton(AF_INET, v, &ns) == 1) have_ns = 1;
		} else if (!strcmp(tok, "search")) {
			char *v;
			while ((v = strtok(NULL, " \t\r\n")) && nsearch < 8) snprintf(search[nsearch++], 256, "%s", v);
		} else if (!strcmp(tok, "options")) {
			char *v;
			while ((v = strtok(NULL, " \t\r\n"))) if (!strncmp(v, "ndots:", 6)) ndots = atoi(v + 6);
		}
	}
	fclose(f);
	if (!have_ns) { errno = 0; fprintf(stderr, "probe: no nameserver in /etc/resolv.conf\n"); return -1; }
	int dots = 0;
	for (const char *p = name; *p; p++) dots += *p == '.';
	size_t nl = strlen(name);
	if (nl && name[nl - 1] == '.') { char abs[256]; snprintf(abs, sizeof abs, "%.*s", (int)nl - 1, name); return query_a(ns, abs, out, max); }
	int n = 0;
	if (dots >= ndots && (n = query_a(ns, name, out, max)) > 0) return n;
	for (int i = 0; i < nsearch; i++) {
		char fq[600];
		if (strlen(name) + strlen(search[i]) + 2 > sizeof fq) continue;
		snprintf(fq, sizeof fq, "%.255s.%.255s", name, search[i]);
		if ((n = query_a(ns, fq, out, max)) > 0) return n;
	}
	if (dots < ndots) n = query_a(ns, name, out, max);
	return n;
}

int main(int argc, char **argv) {
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	const char *cmd = argc > 1 ? argv[1] : "sleep";
	if (!strcmp(cmd, "sleep")) { for (;;) pause(); }
	if (!strcmp(cmd, "echo")) {
		for (int i = 2; i < argc; i++) printf("%s%s", argv[i], i + 1 < argc ? " " : "\n");
		return 0;
	}
	if (!strcmp(cmd, "serve") && argc == 3) return serve(atoi(argv[2]));
	if (!strcmp(cmd, "cat") && argc == 3) {
		FILE *f = fopen(argv[2], "r");
		if (!f) return fail(argv[2]);
		char buf[4096]; size_t n;
		while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
		fclose(f);
		return 0;
	}
	if (!strcmp(cmd, "resolve") && argc == 3) {
		struct in_addr a[16];
		int n = resolve(argv[2], a, 16);
		if (n <= 0) { errno = 0; fprintf(stderr, "probe: %s: no address\n", argv[2]); return 1; }
		for (int i = 0; i < n; i++) printf("%s\n", inet_ntoa(a[i]));
		return 0;
	}
	if (!strcmp(cmd, "get") && argc == 4) {
		struct in_addr a;
		if (resolve(argv[2], &a, 1) <= 0) { errno = 0; fprintf(stderr, "probe: %s: no address\n", argv[2]); return 1; }
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct timeval tv = {.tv_sec = 5};
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3])), .sin_addr = a};
		if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) return fail("connect");
		const char *req = "GET / HTTP/1.0\r\n\r\n";
		(void)!write(s, req, strlen(req));
		char buf[4096]; int total = 0, n;
		while (total < (int)sizeof buf && (n = recv(s, buf + total, sizeof buf - total, 0)) > 0) total += n;
		close(s);
		if (total <= 0) { errno = 0; return fail("empty answer"); }
		fwrite(buf, 1, total, stdout);
		return 0;
	}
	fprintf(stderr, "usage: probe serve PORT | get HOST PORT | resolve NAME | cat FILE | echo WORDS | sleep\n");
	return 2;
}
