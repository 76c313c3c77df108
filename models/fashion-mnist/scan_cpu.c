/*
 * Optional training-speed kernel for vim_torch.py (selective scan forward + hand-written
 * reverse-scan backward), float32, plain C, called through ctypes on torch tensors.
 * Same math as SelectiveScanFn in vim_torch.py (exp(delta*A) is evaluated here with glibc's
 * vectorised expf from libmvec, so nothing of size B*L*E*N ever goes to memory).
 * Threading is done by the caller (each call handles a contiguous slice of the batch).
 *
 * Layouts (all contiguous, row-major):
 *   u, delta, y, gy, gu, gdelta : (B, L, E)
 *   Bm, Cm, gB, gC              : (B, L, N)
 *   At, gAt                     : (N, E)         = A transposed (A = -exp(A_log))
 * Build: gcc -O3 -march=native -fno-math-errno -shared -fPIC scan_cpu.c -o scan_cpu.so -lmvec -lm
 */
#include <stdlib.h>
#include <string.h>

/* glibc's expf, declared SIMD-enabled so gcc calls the libmvec vector variants */
__attribute__((simd("notinbranch"))) float expf(float);

/* a[n*E + e] = exp(dt[e] * At[n*E + e]) */
static void decay(float *a, const float *dt, const float *At, int N, int E)
{
    for (int n = 0; n < N; n++) {
        float *an = a + (size_t)n * E;
        const float *Atn = At + (size_t)n * E;
        for (int e = 0; e < E; e++)
            an[e] = expf(dt[e] * Atn[e]);
    }
}

static float dotf(const float *a, const float *b, int n)
{
    float p[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            p[j] += a[i + j] * b[i + j];
    float s = 0.0f;
    for (; i < n; i++)
        s += a[i] * b[i];
    for (int j = 0; j < 16; j++)
        s += p[j];
    return s;
}

void scan_fwd(const float *u, const float *delta, const float *At, const float *Bm,
              const float *Cm, float *y, int Bsz, int L, int E, int N)
{
    float *h = (float *)malloc(sizeof(float) * (size_t)N * E);
    float *a = (float *)malloc(sizeof(float) * (size_t)N * E);
    float *du = (float *)malloc(sizeof(float) * (size_t)E);
    for (int b = 0; b < Bsz; b++) {
        memset(h, 0, sizeof(float) * (size_t)N * E);
        for (int t = 0; t < L; t++) {
            size_t bt = (size_t)b * L + t;
            const float *ut = u + bt * E, *dt = delta + bt * E;
            const float *Bt = Bm + bt * N, *Ct = Cm + bt * N;
            float *yt = y + bt * E;
            decay(a, dt, At, N, E);
            for (int e = 0; e < E; e++) {
                du[e] = dt[e] * ut[e];
                yt[e] = 0.0f;
            }
            for (int n = 0; n < N; n++) {
                const float bn = Bt[n], cn = Ct[n];
                float *hn = h + (size_t)n * E;
                const float *an = a + (size_t)n * E;
                for (int e = 0; e < E; e++) {
                    hn[e] = an[e] * hn[e] + du[e] * bn;
                    yt[e] += hn[e] * cn;
                }
            }
        }
    }
    free(h);
    free(a);
    free(du);
}

void scan_bwd(const float *u, const float *delta, const float *Bm,
              const float *Cm, const float *At, const float *gy, float *gu, float *gdelta,
              float *gAt, float *gB, float *gC, int Bsz, int L, int E, int N)
{
    const size_t NE = (size_t)N * E;
    float *hs = (float *)malloc(sizeof(float) * (size_t)L * NE);
    float *as = (float *)malloc(sizeof(float) * (size_t)L * NE);
    float *g = (float *)malloc(sizeof(float) * NE);
    float *du = (float *)malloc(sizeof(float) * (size_t)E);
    float *gdu = (float *)malloc(sizeof(float) * (size_t)E);
    memset(gAt, 0, sizeof(float) * NE);
    for (int b = 0; b < Bsz; b++) {
        /* recompute all states h[t] of this sample */
        for (int t = 0; t < L; t++) {
            size_t bt = (size_t)b * L + t;
            const float *ut = u + bt * E, *dt = delta + bt * E;
            const float *Bt = Bm + bt * N;
            float *ht = hs + (size_t)t * NE;
            float *a = as + (size_t)t * NE;
            decay(a, dt, At, N, E);
            const float *hp = t ? hs + (size_t)(t - 1) * NE : NULL;
            for (int e = 0; e < E; e++)
                du[e] = dt[e] * ut[e];
            for (int n = 0; n < N; n++) {
                const float bn = Bt[n];
                float *hn = ht + (size_t)n * E;
                const float *an = a + (size_t)n * E;
                if (hp) {
                    const float *hpn = hp + (size_t)n * E;
                    for (int e = 0; e < E; e++)
                        hn[e] = an[e] * hpn[e] + du[e] * bn;
                } else {
                    for (int e = 0; e < E; e++)
                        hn[e] = du[e] * bn;
                }
            }
        }
        /* reverse scan; g = dLoss/dh[t] */
        memset(g, 0, sizeof(float) * NE);
        for (int t = L - 1; t >= 0; t--) {
            size_t bt = (size_t)b * L + t;
            const float *ut = u + bt * E, *dt = delta + bt * E, *gyt = gy + bt * E;
            const float *a = as + (size_t)t * NE, *Bt = Bm + bt * N, *Ct = Cm + bt * N;
            const float *ht = hs + (size_t)t * NE;
            float *gut = gu + bt * E, *gdt = gdelta + bt * E;
            for (int n = 0; n < N; n++) {
                const float cn = Ct[n];
                float *gn = g + (size_t)n * E;
                for (int e = 0; e < E; e++)
                    gn[e] += gyt[e] * cn;
                gC[bt * N + n] = dotf(ht + (size_t)n * E, gyt, E);
            }
            for (int e = 0; e < E; e++) {
                du[e] = dt[e] * ut[e];
                gdu[e] = 0.0f;
            }
            for (int n = 0; n < N; n++) {
                const float bn = Bt[n];
                const float *gn = g + (size_t)n * E;
                for (int e = 0; e < E; e++)
                    gdu[e] += gn[e] * bn;
                gB[bt * N + n] = dotf(gn, du, E);
            }
            for (int e = 0; e < E; e++) {
                gdt[e] = gdu[e] * ut[e];
                gut[e] = gdu[e] * dt[e];
            }
            if (t > 0) {
                const float *hp = hs + (size_t)(t - 1) * NE;
                for (int n = 0; n < N; n++) {
                    const float *gn = g + (size_t)n * E, *hpn = hp + (size_t)n * E;
                    const float *an = a + (size_t)n * E, *Atn = At + (size_t)n * E;
                    float *gAn = gAt + (size_t)n * E;
                    for (int e = 0; e < E; e++) {
                        float gx = gn[e] * hpn[e] * an[e];   /* d(loss)/d(delta*A) */
                        gdt[e] += gx * Atn[e];
                        gAn[e] += gx * dt[e];
                    }
                }
            }
            for (size_t i = 0; i < NE; i++)
                g[i] *= a[i];
        }
    }
    free(hs);
    free(as);
    free(g);
    free(du);
    free(gdu);
}
