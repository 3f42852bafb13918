/* randio: 4 KiB random O_DIRECT reads or writes on a block device for a
 * number of seconds at queue depth 1 (pread/pwrite) or N (Linux native AIO,
 * io_submit/io_getevents through raw system calls: no libaio).
 * Prints "IOPS <n> LAT_US <mean microseconds per I/O at depth 1>".
 *   randio DEV read|write DEPTH SECONDS SPAN_MIB
 * Built static by the testbed (gcc -static -O2) for the L2 guest. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s) {
	*s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
	return *s;
}

int main(int argc, char **argv) {
	if (argc != 6) { fprintf(stderr, "usage: randio DEV read|write DEPTH SECONDS SPAN_MIB\n"); return 2; }
	int wr = strcmp(argv[2], "write") == 0, depth = atoi(argv[3]);
	double secs = atof(argv[4]);
	uint64_t blocks = (uint64_t)atoi(argv[5]) * 256, seed = 88172645463325252ull, done = 0;
	int fd = open(argv[1], (wr ? O_RDWR : O_RDONLY) | O_DIRECT);
	if (fd < 0 || depth < 1 || depth > 256) { perror("open"); return 1; }
	char *buf;
	if (posix_memalign((void **)&buf, 4096, 4096 * depth)) return 1;
	memset(buf, 0x5a, 4096 * depth);
	double t0 = now(), end = t0 + secs;
	if (depth == 1) {
		while (now() < end) {
			off_t off = (off_t)(rnd(&seed) % blocks) * 4096;
			ssize_t n = wr ? pwrite(fd, buf, 4096, off) : pread(fd, buf, 4096, off);
			if (n != 4096) { perror("io"); return 1; }
			done++;
		}
	} else {
		aio_context_t ctx = 0;
		if (syscall(SYS_io_setup, depth, &ctx)) { perror("io_setup"); return 1; }
		struct iocb cbs[256], *ptrs[256];
		struct io_event ev[256];
		for (int i = 0; i < depth; i++) {
			memset(&cbs[i], 0, sizeof cbs[i]);
			cbs[i].aio_fildes = fd;
			cbs[i].aio_lio_opcode = wr ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
			cbs[i].aio_buf = (uint64_t)(uintptr_t)(buf + 4096 * i);
			cbs[i].aio_nbytes = 4096;
			cbs[i].aio_offset = (rnd(&seed) % blocks) * 4096;
			cbs[i].aio_data = i;
			ptrs[i] = &cbs[i];
		}
		if (syscall(SYS_io_submit, ctx, depth, ptrs) != depth) { perror("io_submit"); return 1; }
		while (now() < end) {
			long n = syscall(SYS_io_getevents, ctx, 1, depth, ev, NULL);
			if (n < 1) { perror("io_getevents"); return 1; }
			for (long j = 0; j < n; j++) {
				if ((long)ev[j].res != 4096) { fprintf(stderr, "io: %lld\n", (long long)ev[j].res); return 1; }
				struct iocb *cb = &cbs[ev[j].data];
				cb->aio_offset = (rnd(&seed) % blocks) * 4096;
				ptrs[j] = cb;
			}
			done += n;
			if (syscall(SYS_io_submit, ctx, n, ptrs) != n) { perror("io_submit"); return 1; }
		}
	}
	double t = now() - t0;
	printf("IOPS %.0f LAT_US %.1f\n", done / t, t * 1e6 / done * depth);
	return 0;
}
