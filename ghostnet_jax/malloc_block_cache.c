/* A malloc front for glibc that keeps freed large blocks mapped and hands them out again.

Why: XLA:CPU allocates each train step's temporary buffers as one block (1.7 GB for
GhostNet-CIFAR 0.5x at batch 128) and frees it when the step ends. glibc serves a block
that large with a fresh mmap and unmaps it on free, so every step the kernel faults in and
zeroes 1.7 GB again; that was ~20% of the step's wall time and the reason a real epoch ran
well below the benchmark's median step (README, Performance). This library, loaded with
LD_PRELOAD by ghostnet_jax/malloc_block_cache.py, serves requests of at least
GHOSTNET_JAX_MALLOC_BLOCK_CACHE_MIN_MB (default 32) from blocks it keeps mapped; every
other request goes to glibc unchanged.

Bounds: a free block is reused for a request of at most its size and at least 4/5 of it;
the free blocks kept add up to at most twice the largest block ever served (the least
recently freed go first); at most MAX_BLOCKS blocks. A block is not zeroed between uses,
which malloc never promises (calloc goes to glibc). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define HUGE_PAGE ((size_t)2 << 20)
#define MAX_BLOCKS 64

struct block {
    void *base;             /* written once per mapping, read without the lock by free() */
    size_t size;
    int in_use;
    unsigned long freed_at; /* for least-recently-freed eviction */
};

static struct block blocks[MAX_BLOCKS];
static int n_blocks;
static size_t min_bytes = (size_t)32 << 20;
static size_t largest_served, free_bytes;
static unsigned long clock_ticks, hits, misses;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* A child forked while another thread held the lock would wait on it forever. */
static void lock_before_fork(void) { pthread_mutex_lock(&lock); }
static void unlock_after_fork(void) { pthread_mutex_unlock(&lock); }

__attribute__((constructor)) static void set_up(void) {
    const char *mb = getenv("GHOSTNET_JAX_MALLOC_BLOCK_CACHE_MIN_MB");
    if (mb && *mb) {
        long value = strtol(mb, NULL, 10);
        if (value > 0) min_bytes = (size_t)value << 20;
    }
    pthread_atfork(lock_before_fork, unlock_after_fork, unlock_after_fork);
}

/* hits: requests served from a kept block; misses: requests that mapped a new one;
   blocks: blocks mapped now (in use or kept); kept_bytes: the size of those kept free. */
void ghostnet_jax_block_cache_stats(unsigned long *out_hits, unsigned long *out_misses,
                                    unsigned long *out_blocks, unsigned long *out_kept_bytes) {
    pthread_mutex_lock(&lock);
    *out_hits = hits;
    *out_misses = misses;
    unsigned long mapped = 0;
    for (int i = 0; i < n_blocks; i++) mapped += blocks[i].base != NULL;
    *out_blocks = mapped;
    *out_kept_bytes = free_bytes;
    pthread_mutex_unlock(&lock);
}

static int find_block(const void *p) {
    int n = __atomic_load_n(&n_blocks, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++)
        if (__atomic_load_n(&blocks[i].base, __ATOMIC_ACQUIRE) == p) return i;
    return -1;
}

/* A fresh mapping aligned to a huge page, so that all of it can be backed by them. */
static void *map_aligned(size_t size) {
    char *p = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    size_t head = (HUGE_PAGE - (size_t)p % HUGE_PAGE) % HUGE_PAGE;
    if (head) munmap(p, head);
    munmap(p + head + size, HUGE_PAGE - head);
    madvise(p + head, size, MADV_HUGEPAGE);
    return p + head;
}

static void unmap_block(int i) {          /* the lock is held; the block is free */
    munmap(blocks[i].base, blocks[i].size);
    free_bytes -= blocks[i].size;
    __atomic_store_n(&blocks[i].base, NULL, __ATOMIC_RELEASE);
    blocks[i].size = 0;
}

static void *take_block(size_t request) {
    size_t need = (request + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    void *out = NULL;
    pthread_mutex_lock(&lock);
    int best = -1, slot = -1;
    for (int i = 0; i < n_blocks; i++) {
        if (!blocks[i].base) {
            if (slot < 0) slot = i;
        } else if (!blocks[i].in_use && blocks[i].size >= need
                   && blocks[i].size - need <= need / 4
                   && (best < 0 || blocks[i].size < blocks[best].size)) {
            best = i;
        }
    }
    if (best >= 0) {
        blocks[best].in_use = 1;
        free_bytes -= blocks[best].size;
        hits++;
        out = blocks[best].base;
    } else {
        if (slot < 0 && n_blocks < MAX_BLOCKS) slot = n_blocks;
        if (slot >= 0 && (out = map_aligned(need)) != NULL) {
            blocks[slot].size = need;
            blocks[slot].in_use = 1;
            __atomic_store_n(&blocks[slot].base, out, __ATOMIC_RELEASE);
            if (slot == n_blocks) __atomic_store_n(&n_blocks, n_blocks + 1, __ATOMIC_RELEASE);
            if (need > largest_served) largest_served = need;
            misses++;
        }
    }
    pthread_mutex_unlock(&lock);
    return out;   /* NULL: let glibc serve it */
}

static void give_back(int i) {
    pthread_mutex_lock(&lock);
    blocks[i].in_use = 0;
    blocks[i].freed_at = ++clock_ticks;
    free_bytes += blocks[i].size;
    while (free_bytes > 2 * largest_served) {
        int oldest = -1;
        for (int j = 0; j < n_blocks; j++)
            if (blocks[j].base && !blocks[j].in_use
                && (oldest < 0 || blocks[j].freed_at < blocks[oldest].freed_at)) oldest = j;
        unmap_block(oldest);
    }
    pthread_mutex_unlock(&lock);
}

void *malloc(size_t size) {
    if (size >= min_bytes) {
        void *p = take_block(size);
        if (p) return p;
    }
    return __libc_malloc(size);
}

void free(void *p) {
    if (!p) return;
    int i = find_block(p);
    if (i < 0) __libc_free(p);
    else give_back(i);
}

void *calloc(size_t count, size_t size) { return __libc_calloc(count, size); }

void *realloc(void *p, size_t size) {
    int i = p ? find_block(p) : -1;
    if (i < 0) return __libc_realloc(p, size);
    if (size == 0) { free(p); return NULL; }
    if (size <= blocks[i].size && size >= min_bytes) return p;
    void *q = malloc(size);
    if (q) {
        memcpy(q, p, size < blocks[i].size ? size : blocks[i].size);
        free(p);
    }
    return q;
}

void *reallocarray(void *p, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) { errno = ENOMEM; return NULL; }
    return realloc(p, total);
}

static void *aligned(size_t alignment, size_t size) {
    if (size >= min_bytes && alignment <= HUGE_PAGE) {
        void *p = take_block(size);
        if (p) return p;
    }
    return __libc_memalign(alignment, size);
}

void *memalign(size_t alignment, size_t size) { return aligned(alignment, size); }
void *aligned_alloc(size_t alignment, size_t size) { return aligned(alignment, size); }
void *valloc(size_t size) { return aligned(4096, size); }
void *pvalloc(size_t size) { return aligned(4096, (size + 4095) & ~(size_t)4095); }

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1))) return EINVAL;
    void *p = aligned(alignment, size);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

size_t malloc_usable_size(void *p) {
    int i = p ? find_block(p) : -1;
    if (i >= 0) return blocks[i].size;
    static size_t (*glibc_usable_size)(void *);
    if (!glibc_usable_size)
        glibc_usable_size = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
    return glibc_usable_size ? glibc_usable_size(p) : 0;
}
