/* A consumer in C written only from the README's "Bus layout" section: it maps a ring read-only,
 * copies the newest records with the documented copy-then-validate protocol and prints one line
 * per record: "seq symbol_id exchange price qty trade_id side". Usage: c_reader NAME COUNT */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define U64(base, off) (*(volatile const uint64_t *)((const char *)(base) + (off)))

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    char path[512];
    snprintf(path, sizeof path, "/dev/shm/%s", argv[1]);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(path); return 1; }
    const char *m = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    if (memcmp(m, "MSTREAM1", 8) != 0 || U64(m, 8) != 1 || U64(m, 40) != 1) {
        fprintf(stderr, "not a layout-1 ring\n"); return 1;
    }
    uint64_t size = U64(m, 24), cap = U64(m, 32), data = U64(m, 48);
    uint64_t want = strtoull(argv[2], NULL, 10);
    uint64_t tail = U64(m, 256);                          /* load tail */
    uint64_t first = tail > want ? tail - want : 0;
    uint64_t n = tail - first;
    char *copy = malloc(n * size);
    for (uint64_t s = first; s < tail; s++)               /* copy the slots */
        memcpy(copy + (s - first) * size, m + data + (s & (cap - 1)) * size, size);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint64_t intent = U64(m, 192);                        /* then load tail_intent */
    for (uint64_t s = first; s < tail; s++) {
        const char *r = copy + (s - first) * size;
        uint64_t seq; memcpy(&seq, r, 8);
        if (s + cap < intent || seq != s) continue;       /* overwritten while copied */
        uint32_t symbol; uint8_t exchange; double price, qty; int64_t trade_id; int8_t side;
        memcpy(&symbol, r + 40, 4); memcpy(&exchange, r + 44, 1);
        memcpy(&price, r + 48, 8); memcpy(&qty, r + 56, 8);
        memcpy(&trade_id, r + 64, 8); memcpy(&side, r + 72, 1);
        printf("%llu %u %u %.17g %.17g %lld %d\n", (unsigned long long)seq, symbol, exchange,
               price, qty, (long long)trade_id, side);
    }
    return 0;
}
