/* Peak single-core f32 FMA throughput with 256-bit FMA (AVX2+FMA), the denominator of the
 * "% of peak" figures in docs/RESULTS.md. 12 independent accumulator chains hide the FMA
 * latency; prints GFLOP/s (1 FMA = 2 FLOPs) of the best of 5 runs.
 *   gcc -O2 -mavx2 -mfma scripts/peak_fma.c -o /tmp/peak_fma && /tmp/peak_fma */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const long iters = 200000000L;
    double best = 0;
    for (int run = 0; run < 5; run++) {
        __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
        __m256 a0 = _mm256_set1_ps(0), a1 = _mm256_set1_ps(1), a2 = _mm256_set1_ps(2),
               a3 = _mm256_set1_ps(3), a4 = _mm256_set1_ps(4), a5 = _mm256_set1_ps(5),
               a6 = _mm256_set1_ps(6), a7 = _mm256_set1_ps(7), a8 = _mm256_set1_ps(8),
               a9 = _mm256_set1_ps(9), a10 = _mm256_set1_ps(10), a11 = _mm256_set1_ps(11);
        double t0 = now();
        for (long k = 0; k < iters; k++) {
            a0 = _mm256_fmadd_ps(a0, b, c); a1 = _mm256_fmadd_ps(a1, b, c);
            a2 = _mm256_fmadd_ps(a2, b, c); a3 = _mm256_fmadd_ps(a3, b, c);
            a4 = _mm256_fmadd_ps(a4, b, c); a5 = _mm256_fmadd_ps(a5, b, c);
            a6 = _mm256_fmadd_ps(a6, b, c); a7 = _mm256_fmadd_ps(a7, b, c);
            a8 = _mm256_fmadd_ps(a8, b, c); a9 = _mm256_fmadd_ps(a9, b, c);
            a10 = _mm256_fmadd_ps(a10, b, c); a11 = _mm256_fmadd_ps(a11, b, c);
        }
        double dt = now() - t0;
        __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                 _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
        s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
        float out[8];
        _mm256_storeu_ps(out, s);
        double gflops = iters * 12.0 * 8 * 2 / dt / 1e9;
        if (gflops > best) best = gflops;
        fprintf(stderr, "run %d: %.1f GFLOP/s (checksum %g)\n", run, gflops, out[0]);
    }
    printf("peak f32 FMA, one core: %.1f GFLOP/s = %.1f GMAC/s\n", best, best / 2);
    return 0;
}
