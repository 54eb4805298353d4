/* The cores' f32 FMA peak: 12 independent chains of 256-bit vfmadd231ps per thread (enough to hide
 * the FMA latency on two FMA pipes), 16 FLOP each, N per thread. Compared with the forward's GEMM
 * rate in benches/results/study-speed-zen3-b/NOTE.md.
 *   gcc -O2 -mavx2 -mfma -pthread benches/tools/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak 1 && /tmp/fma_peak 2
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 400000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run(void *arg) {
  (void)arg;
  __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
         a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < N / 12; i++) {
    /* asm so the compiler neither merges nor drops the chains */
    __asm__ volatile(
        "vfmadd231ps %[x], %[y], %[a0]\n\t"
        "vfmadd231ps %[x], %[y], %[a1]\n\t"
        "vfmadd231ps %[x], %[y], %[a2]\n\t"
        "vfmadd231ps %[x], %[y], %[a3]\n\t"
        "vfmadd231ps %[x], %[y], %[a4]\n\t"
        "vfmadd231ps %[x], %[y], %[a5]\n\t"
        "vfmadd231ps %[x], %[y], %[a6]\n\t"
        "vfmadd231ps %[x], %[y], %[a7]\n\t"
        "vfmadd231ps %[x], %[y], %[a8]\n\t"
        "vfmadd231ps %[x], %[y], %[a9]\n\t"
        "vfmadd231ps %[x], %[y], %[a10]\n\t"
        "vfmadd231ps %[x], %[y], %[a11]\n\t"
        : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3), [a4] "+x"(a4),
          [a5] "+x"(a5), [a6] "+x"(a6), [a7] "+x"(a7), [a8] "+x"(a8), [a9] "+x"(a9),
          [a10] "+x"(a10), [a11] "+x"(a11)
        : [x] "x"(x), [y] "x"(y));
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a10, a11)));
  return (void *)(long)(out[0] > 0);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  if (threads < 1 || threads > 64) {
    fprintf(stderr, "usage: fma_peak THREADS (1-64)\n");
    return 2;
  }
  pthread_t t[64];
  double t0 = now();
  for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, run, 0);
  for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
  double dt = now() - t0;
  printf("%d threads: %.1f GFLOP/s\n", threads, threads * (double)N * 16 / dt / 1e9);
  return 0;
}
