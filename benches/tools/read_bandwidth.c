/* How fast the cores stream memory: sums a 512 MiB f32 array (far past every cache) with 256-bit
 * loads, 5 passes, on OMP_NUM_THREADS threads. The decoding step's weight read in
 * src/engine/packed.rs is set against it (results: benches/results/read-bandwidth-zen3.txt).
 *   gcc -O2 -mavx2 -fopenmp benches/tools/read_bandwidth.c -o /tmp/read_bandwidth
 *   OMP_NUM_THREADS=1 /tmp/read_bandwidth && OMP_NUM_THREADS=2 /tmp/read_bandwidth
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    size_t n = (size_t)1 << 27;
    float *a = aligned_alloc(64, n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    for (int pass = 0; pass < 5; pass++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        double sum = 0;
#pragma omp parallel for reduction(+ : sum)
        for (size_t j = 0; j < n; j += 64) {
            __m256 acc = _mm256_setzero_ps();
            for (int q = 0; q < 64; q += 8) acc = _mm256_add_ps(acc, _mm256_load_ps(a + j + q));
            float lanes[8];
            _mm256_storeu_ps(lanes, acc);
            sum += lanes[0] + lanes[7];
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        printf("%d threads, pass %d: %.1f GB/s (checksum %g)\n", omp_get_max_threads(), pass,
               n * sizeof(float) / s / 1e9, sum);
    }
    free(a);
    return 0;
}
