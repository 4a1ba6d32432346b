/* mmbench's C helpers, compiled at install (an optional extension) and loaded with ctypes by
 * mmbench/native/__init__.py; plain C, no Python API (ctypes releases the GIL during each call).
 *
 * 1. mmb_topk_*: exact top-k of score rows by threshold scan, the CPU search kernel of
 *    mmbench/search/scan_topk.py (the search backend "scan-cpu").
 * 2. mmb_trec_lines: the bytes of TREC run lines (mmbench/results/records.py's write_trec).
 *
 * The search kernel. A state
 * holds, for each query row, a threshold and the candidates kept so far. The caller computes the
 * score rows tile by tile (a BLAS matrix product) and hands each tile to mmb_topk_scan, which keeps every
 * candidate whose score is >= the row's threshold. When a row's buffer fills, it is compacted to
 * the candidates at or above its k-th largest score, and the threshold rises to that score.
 *
 * Why the result is exact. Let s_k be the true k-th largest score of a row (over every candidate
 * scanned). A compaction's new threshold is the k-th largest of a subset of the candidates, so it
 * is <= s_k: no candidate scoring >= s_k is ever dropped by a compaction. The threshold a row
 * starts with (mmb_topk_seed, an estimate from a sample of the pool) may be too high; then fewer than k
 * candidates score >= it, the row ends with fewer than k kept, and mmb_topk_finish reports it so the
 * caller scans that row again from -inf. A row that ends with >= k kept therefore holds every
 * candidate scoring >= s_k, ties at the cut-off included, and mmb_topk_finish orders them by the rule:
 * score descending, then key descending (the key is the candidate's tie-break rank). The rule is
 * defined in mmbench/search/ties.py; order_key below is a copy of its packed_order_keys, kept here
 * for speed (the backend contract tests check the two orders agree).
 *
 * NaN scores are never kept (no comparison with NaN is true): a row with NaN scores may end short
 * even from -inf, and the caller ranks such rows another way.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef struct {
    float score;
    uint32_t id;   /* candidate ids are below 2**32 (the caller checks) */
} hit;

typedef struct {
    int64_t rows, k;
    float *threshold;   /* per row: every candidate scoring >= it is kept */
    int64_t *count, *cap;
    hit **kept;
    double *slack;      /* per row, or NULL (0): a compaction keeps down to the k-th kept score - slack */
    float *start;       /* per row, with slack: the threshold the row started from */
} state;

void mmb_topk_free(void *p) {
    state *st = p;
    if (!st) return;
    if (st->kept)
        for (int64_t r = 0; r < st->rows; r++) free(st->kept[r]);
    free(st->kept);
    free(st->threshold);
    free(st->count);
    free(st->cap);
    free(st->slack);
    free(st->start);
    free(st);
}

void *mmb_topk_new(int64_t rows, int64_t k) {
    state *st = calloc(1, sizeof(state));
    if (!st || rows < 0 || k < 1) {
        free(st);
        return NULL;
    }
    st->rows = rows;
    st->k = k;
    st->threshold = malloc((rows ? rows : 1) * sizeof(float));
    st->count = calloc(rows ? rows : 1, sizeof(int64_t));
    st->cap = calloc(rows ? rows : 1, sizeof(int64_t));
    st->kept = calloc(rows ? rows : 1, sizeof(hit *));
    if (!st->threshold || !st->count || !st->cap || !st->kept) {
        mmb_topk_free(st);
        return NULL;
    }
    for (int64_t r = 0; r < rows; r++) st->threshold[r] = -INFINITY;
    return st;
}

/* The k-th largest of a[0..n), 1 <= k <= n, no NaN; a is reordered. */
static float kth_largest(float *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi], pivot;
        if (x < y)
            pivot = y < z ? y : (x < z ? z : x);
        else
            pivot = x < z ? x : (y < z ? z : y);
        int64_t i = lo, j = hi;
        while (i <= j) {   /* descending: larger values to the left */
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[want];
}

typedef struct {
    float *values;
    int64_t size;
} scratch;

static int scratch_fit(scratch *s, int64_t n) {
    if (s->size >= n) return 0;
    float *v = realloc(s->values, n * sizeof(float));
    if (!v) return -1;
    s->values = v;
    s->size = n;
    return 0;
}

/* The largest float <= x (x a double; -inf for NaN). */
static float float_at_or_below(double x) {
    if (x != x) return -INFINITY;
    float f = (float)x;
    return (double)f > x ? nextafterf(f, -INFINITY) : f;
}

/* Keep only row r's candidates at or above its `k`-th largest kept score (ties stay), less the
   row's slack where the state has one, and raise the row's threshold to that. */
static int compact(state *st, int64_t r, int64_t k, scratch *s) {
    int64_t n = st->count[r];
    hit *kept = st->kept[r];
    if (n <= k) return 0;
    if (scratch_fit(s, n)) return -1;
    for (int64_t i = 0; i < n; i++) s->values[i] = kept[i].score;
    float t = kth_largest(s->values, n, k);
    if (st->slack) t = float_at_or_below((double)t - st->slack[r]);
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++)
        if (kept[i].score >= t) kept[w++] = kept[i];
    st->count[r] = w;
    if (t > st->threshold[r]) st->threshold[r] = t;
    return 0;
}

/* Row r's buffer is full: compact it, and grow it while it stays over half full (ties). With a
   slack, a row that still holds more than 8k + 1024 candidates after the compaction gives up (its
   slack is wide against its scores' spread): it keeps nothing more (a NaN threshold) and
   mmb_topk_floor reports it incomplete (a NaN start), so that no row's buffer grows past that. */
static int make_room(state *st, int64_t r, scratch *s) {
    if (compact(st, r, st->k, s)) return -1;
    if (st->slack && st->count[r] > 8 * st->k + 1024) {
        free(st->kept[r]);
        st->kept[r] = NULL;
        st->count[r] = st->cap[r] = 0;
        st->threshold[r] = NAN;
        st->start[r] = NAN;
        return 0;
    }
    if (st->cap[r] && st->count[r] * 2 <= st->cap[r]) return 0;
    int64_t cap = st->cap[r] ? st->cap[r] * 2 : 2 * st->k + 64;
    hit *grown = realloc(st->kept[r], cap * sizeof(hit));
    if (!grown) return -1;
    st->kept[r] = grown;
    st->cap[r] = cap;
    return 0;
}

/* Keep candidate j0 + j of the row (id base + j0 + j) for each bit j set in mask, if its score is
   still >= the row's threshold (a compaction may have raised it since the mask was made). */
static int keep_marked(state *st, int64_t r, const float *row, int64_t j0, uint64_t mask, int64_t base,
                       scratch *s) {
    while (mask) {
        int64_t j = j0 + __builtin_ctzll(mask);
        mask &= mask - 1;
        float score = row[j];
        if (!(score >= st->threshold[r])) continue;
        if (st->count[r] == st->cap[r]) {
            if (make_room(st, r, s)) return -1;
            if (!(score >= st->threshold[r])) continue;   /* also a row that gave up (NaN) */
        }
        hit *h = &st->kept[r][st->count[r]++];
        h->score = score;
        h->id = (uint32_t)(base + j);
    }
    return 0;
}

/* Bit j set where x[j] >= t, for the n <= 64 scores x[0..n). */
static inline uint64_t at_or_above(const float *x, int64_t n, float t) {
    uint64_t mask = 0;
    int64_t j = 0;
#if defined(__SSE2__)
    __m128 threshold = _mm_set1_ps(t);
    for (; j + 4 <= n; j += 4)
        mask |= (uint64_t)_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(x + j), threshold)) << j;
#endif
    for (; j < n; j++) mask |= (uint64_t)(x[j] >= t) << j;
    return mask;
}

/* Rows r0..r0+nr of the state against score tile rows tile[i * ld + j], j < m; the candidate of
   column j has id base + j. Returns 0, or -1 when memory ran out. */
int mmb_topk_scan(void *p, int64_t r0, int64_t nr, const float *tile, int64_t ld, int64_t m,
                  int64_t base) {
    state *st = p;
    scratch s = {NULL, 0};
    int rc = 0;
    for (int64_t i = 0; i < nr && rc == 0; i++) {
        int64_t r = r0 + i;
        const float *row = tile + i * ld;
        for (int64_t j0 = 0; j0 < m && rc == 0; j0 += 64) {
            uint64_t mask = at_or_above(row + j0, m - j0 < 64 ? m - j0 : 64, st->threshold[r]);
            if (mask) rc = keep_marked(st, r, row, j0, mask, base, &s);
        }
    }
    free(s.values);
    return rc;
}

/* Rows r0..r0+nr start from the given thresholds (NaN: left as they are); an estimate of each
   row's k-th largest score, possibly too high: mmb_topk_finish reports the rows where it was. */
void mmb_topk_seed(void *p, int64_t r0, int64_t nr, const float *thresholds) {
    state *st = p;
    for (int64_t i = 0; i < nr; i++) {
        int64_t r = r0 + i;
        float t = st->slack ? float_at_or_below((double)thresholds[i] - st->slack[r]) : thresholds[i];
        if (t > st->threshold[r]) st->threshold[r] = t;
        if (st->start) st->start[r] = st->threshold[r];
    }
}

/* The gather mode of the kernel (mmbench/search/rescore.py's margin proof says what it is for).
 *
 * mmb_topk_slack, before any seed or scan: rows r0..r0+nr get slack[i] >= 0 (finite): from then on
 * a compaction keeps the candidates at or above float_at_or_below(k-th kept score - slack), and a
 * seed starts the row there too. Returns 0, or -1 when memory ran out.
 *
 * mmb_topk_floor, after the scan: for each row, T = its n-th largest kept score and floor =
 * (double)T - slack (as double arithmetic); keeps exactly the candidates with (double)score >=
 * floor, writes their number to counts[i] and complete[i] = 1; or counts[i] = 0 and complete[i]
 * = 0 where the row cannot vouch for that set: fewer than n kept, a NaN floor, a floor below
 * the threshold the row started from (a seed that was too high), or a row that gave up
 * (make_room: more than 8k + 1024 candidates within its slack).
 *
 * Why a complete row holds every candidate scoring >= F* = fl(T* - slack), T* the true n-th
 * largest score (fl: the double subtraction, which is monotone in T*): every threshold the row
 * ever had is where it started (t0) or float_at_or_below(fl(t - slack)) <= fl(t - slack) <= F*,
 * t being the k-th largest of a subset of the scores, so t <= T*; hence every candidate scoring
 * >= max(t0, F*) was kept. T, the n-th largest kept, is <= T*. When floor = fl(T - slack) >= t0,
 * then T >= floor >= t0 (slack >= 0), so T* >= T >= t0 and every candidate >= T* (>= F*) was
 * kept: T = T*, floor = F* >= t0, and every candidate >= F* was kept. NaN scores are never kept.
 *
 * mmb_topk_ids: the kept ids of rows r0..r0+nr, complete rows only (after mmb_topk_floor), one
 * row after the other, in no particular order within a row, into out. */
int mmb_topk_slack(void *p, int64_t r0, int64_t nr, const double *slack) {
    state *st = p;
    if (!st->slack) {
        st->slack = calloc(st->rows ? st->rows : 1, sizeof(double));
        st->start = malloc((st->rows ? st->rows : 1) * sizeof(float));
        if (!st->slack || !st->start) return -1;
        for (int64_t r = 0; r < st->rows; r++) st->start[r] = st->threshold[r];
    }
    for (int64_t i = 0; i < nr; i++) st->slack[r0 + i] = slack[i];
    return 0;
}

int mmb_topk_floor(void *p, int64_t r0, int64_t nr, int64_t n, int64_t *counts, uint8_t *complete) {
    state *st = p;
    scratch s = {NULL, 0};
    for (int64_t i = 0; i < nr; i++) {
        int64_t r = r0 + i, c = st->count[r];
        hit *kept = st->kept[r];
        counts[i] = 0;
        complete[i] = 0;
        if (c < n || n < 1) continue;
        if (scratch_fit(&s, c)) {
            free(s.values);
            return -1;
        }
        for (int64_t j = 0; j < c; j++) s.values[j] = kept[j].score;
        double floor = (double)kth_largest(s.values, c, n) - (st->slack ? st->slack[r] : 0.0);
        double t0 = st->start ? (double)st->start[r] : -INFINITY;
        if (!(floor >= t0)) continue;   /* NaN, or a seed above the true n-th score */
        int64_t w = 0;
        for (int64_t j = 0; j < c; j++)
            if ((double)kept[j].score >= floor) kept[w++] = kept[j];
        st->count[r] = w;
        counts[i] = w;
        complete[i] = 1;
    }
    free(s.values);
    return 0;
}

void mmb_topk_ids(void *p, int64_t r0, int64_t nr, const uint8_t *complete, int64_t *out) {
    state *st = p;
    for (int64_t i = 0; i < nr; i++) {
        if (!complete[i]) continue;
        const hit *kept = st->kept[r0 + i];
        for (int64_t j = 0; j < st->count[r0 + i]; j++) *out++ = (int64_t)kept[j].id;
    }
}

typedef struct {
    uint64_t key;   /* ascending order of key = score descending, then tie-break key descending */
    int64_t id;
    float score;
} ranked;

static uint64_t order_key(float score, uint64_t tiebreak) {
    uint32_t bits;
    float plus = score + 0.0f;   /* -0.0 counts as +0.0, as the float comparison does */
    memcpy(&bits, &plus, sizeof bits);
    uint32_t ordered = (bits >> 31) ? ~bits : (bits | 0x80000000u);   /* same order as the float */
    return ~(((uint64_t)ordered << 32) | tiebreak);
}

static void sort_ranked(ranked *a, int64_t n) {
    while (n > 16) {
        uint64_t x = a[0].key, y = a[n / 2].key, z = a[n - 1].key, pivot;
        if (x < y)
            pivot = y < z ? y : (x < z ? z : x);
        else
            pivot = x < z ? x : (y < z ? z : y);
        int64_t i = 0, j = n - 1;
        while (i <= j) {
            while (a[i].key < pivot) i++;
            while (a[j].key > pivot) j--;
            if (i <= j) {
                ranked t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (j + 1 < n - i) {   /* recurse into the smaller side, loop on the larger */
            sort_ranked(a, j + 1);
            a += i;
            n -= i;
        } else {
            sort_ranked(a + i, n - i);
            n = j + 1;
        }
    }
    for (int64_t i = 1; i < n; i++) {
        ranked t = a[i];
        int64_t j = i - 1;
        while (j >= 0 && a[j].key > t.key) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = t;
    }
}

/* a[0..n) in ascending key order, as sort_ranked, with tmp (n entries) as scratch: a
 * least-significant-digit radix sort on the key's bytes, skipping the bytes that every key shares
 * (the high bytes of small tie-break keys, the sign and exponent of close scores). Stable, so equal
 * keys keep their order (sort_ranked would not; keys of distinct candidates differ unless two share
 * a tie-break key, which the rule leaves undecided). Cost only: fewer steps than sort_ranked on the
 * few thousand keys of a query. */
static void radix_ranked(ranked *a, ranked *tmp, int64_t n) {
    if (n < 256) {
        sort_ranked(a, n);
        return;
    }
    uint64_t any = 0, all = ~(uint64_t)0;
    for (int64_t i = 0; i < n; i++) {
        any |= a[i].key;
        all &= a[i].key;
    }
    ranked *src = a, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 8) {
        if ((((any ^ all) >> shift) & 0xff) == 0) continue;   /* every key has this byte */
        int64_t start[257] = {0};
        for (int64_t i = 0; i < n; i++) start[((src[i].key >> shift) & 0xff) + 1]++;
        for (int b = 0; b < 256; b++) start[b + 1] += start[b];
        for (int64_t i = 0; i < n; i++) dst[start[(src[i].key >> shift) & 0xff]++] = src[i];
        ranked *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof(ranked));
}

/* The first n hits of rows r0..r0+nr by score descending, then keys[id] descending (the id itself
   when keys is NULL; every key must be in [0, 2**32)), into out_ids / out_scores (nr x n, row
   major). complete[i] is 1 when row r0+i held at least n candidates (its hits are exact), else 0
   (its slots past those held get id -1). Returns the number of incomplete rows, or -1 when memory
   ran out. */
int64_t mmb_topk_finish(void *p, int64_t r0, int64_t nr, const int64_t *keys, int64_t n,
                        int64_t *out_ids, float *out_scores, uint8_t *complete) {
    state *st = p;
    scratch s = {NULL, 0};
    ranked *order = NULL;
    int64_t order_size = 0, incomplete = 0;
    for (int64_t i = 0; i < nr; i++) {
        int64_t r = r0 + i;
        if (compact(st, r, n, &s)) {
            incomplete = -1;
            break;
        }
        int64_t c = st->count[r];
        if (c > order_size) {
            ranked *grown = realloc(order, c * sizeof(ranked));
            if (!grown) {
                incomplete = -1;
                break;
            }
            order = grown;
            order_size = c;
        }
        const hit *kept = st->kept[r];
        for (int64_t j = 0; j < c; j++) {
            int64_t id = (int64_t)kept[j].id;
            order[j].key = order_key(kept[j].score, (uint64_t)(keys ? keys[id] : id));
            order[j].id = id;
            order[j].score = kept[j].score;
        }
        sort_ranked(order, c);
        int64_t take = c < n ? c : n;
        for (int64_t j = 0; j < take; j++) {
            out_ids[i * n + j] = order[j].id;
            out_scores[i * n + j] = order[j].score;
        }
        for (int64_t j = take; j < n; j++) {
            out_ids[i * n + j] = -1;
            out_scores[i * n + j] = -INFINITY;
        }
        complete[i] = c >= n;
        incomplete += c < n;
    }
    free(s.values);
    free(order);
    return incomplete;
}

/* TREC run lines "qid Q0 did rank score tag\n" of nq query rows x width hits, row-major
   (indices[i * width + c]: the candidate at rank c + 1 of query i, or -1 for an empty slot, which
   is skipped). Query i's id is qid[qid_off[i] .. qid_off[i + 1]), candidate j's did[did_off[j] ..
   did_off[j + 1]); the h-th hit kept (empty slots skipped) has the score text score[score_off[h] ..
   score_off[h + 1]). With out == NULL, returns the number of bytes the lines take; else writes them
   to out (out_cap bytes) and returns that number, or -1 when they do not fit. */
int64_t mmb_trec_lines(int64_t nq, int64_t width, const int64_t *indices, const char *qid,
                       const int64_t *qid_off, const char *did, const int64_t *did_off,
                       const char *score, const int32_t *score_off, const char *tag, int64_t tag_len,
                       char *out, int64_t out_cap) {
    int64_t size = 0, h = 0;
    char rank[24];
    for (int64_t i = 0; i < nq; i++) {
        int64_t qlen = qid_off[i + 1] - qid_off[i];
        for (int64_t c = 0; c < width; c++) {
            int64_t j = indices[i * width + c];
            if (j < 0) continue;
            int64_t dlen = did_off[j + 1] - did_off[j], slen = score_off[h + 1] - score_off[h];
            int rlen = 0;
            for (int64_t v = c + 1; v; v /= 10) rank[sizeof rank - 1 - rlen++] = (char)('0' + v % 10);
            int64_t line = qlen + 4 + dlen + 1 + rlen + 1 + slen + 1 + tag_len + 1;
            if (out) {
                if (size + line > out_cap) return -1;
                char *p = out + size;
                memcpy(p, qid + qid_off[i], qlen);
                p += qlen;
                memcpy(p, " Q0 ", 4);
                p += 4;
                memcpy(p, did + did_off[j], dlen);
                p += dlen;
                *p++ = ' ';
                memcpy(p, rank + sizeof rank - rlen, rlen);
                p += rlen;
                *p++ = ' ';
                memcpy(p, score + score_off[h], slen);
                p += slen;
                *p++ = ' ';
                memcpy(p, tag, tag_len);
                p += tag_len;
                *p = '\n';
            }
            size += line;
            h++;
        }
    }
    return size;
}

/* The search's re-score (mmbench/search/rescore.py, whose docstring defines it and proves the gather
 * margin), in three helpers.
 *
 * mmb_rescore_grouped: out[t] = the float64 inner product of query row qrow[t] of queries (float32,
 * nq x d, row-major) and candidate row crow[t] of rows, for t = order[p], p < n (t = p where order
 * is NULL); rows holds the candidates as stored, float32 (half = 0) or IEEE float16 (half = 1), d
 * values each, ld values apart. The d exact float64 products are added in a fixed order: lane j
 * (j < 8) accumulates products j, j+8, j+16, ... left to right, then
 * ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)) (the sums below say why every SIMD path gives those bits).
 * numpy's elementwise version in rescore.py gives the same bits (tests check it).
 * Cost only: the pairs should come grouped by blocks of `block` candidate rows (mmb_block_order),
 * so that a block's rows are read from memory about once and reused from the cache by every
 * query that gathered them (a float16 block's rows are cast to float32 once, into a scratch
 * buffer); four pairs are summed at once (four independent chains of additions), four pairs of
 * one query (consecutive in the order) sharing each load of the query's values. Returns 0, or -1
 * when memory ran out. */

static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    float f;
    if (exp == 0x1f)
        bits = sign | 0x7f800000u | (man << 13);             /* inf, NaN (payload kept) */
    else if (exp)
        bits = sign | ((exp + 112) << 23) | (man << 13);     /* normal */
    else if (!man)
        bits = sign;                                         /* +-0 */
    else {                                                   /* subnormal: man * 2^-24, exact */
        f = (float)man * 5.9604644775390625e-8f;
        memcpy(&bits, &f, sizeof bits);
        bits |= sign;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* dst[0..d) = the float32 values of the float16 src[0..d) (exact: every half is a float). With
 * F16C (x86-64 CPUs from 2012 on) eight at a time; signalling NaNs come out quiet there, which no
 * caller tells apart (every NaN ranks alike, and run files refuse NaN scores). */
static void halves_scalar(const uint16_t *src, int64_t d, float *dst) {
    for (int64_t j = 0; j < d; j++) dst[j] = half_to_float(src[j]);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
__attribute__((target("f16c,avx"))) static void halves_f16c(const uint16_t *src, int64_t d, float *dst) {
    int64_t j = 0;
    for (; j + 8 <= d; j += 8)
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + j))));
    for (; j < d; j++) dst[j] = half_to_float(src[j]);
}

static void (*resolve_halves(void))(const uint16_t *, int64_t, float *) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx") ? halves_f16c : halves_scalar;
}
#else
static void (*resolve_halves(void))(const uint16_t *, int64_t, float *) { return halves_scalar; }
#endif

static void halves(const uint16_t *src, int64_t d, float *dst) {
    static void (*impl)(const uint16_t *, int64_t, float *) = NULL;
    if (!impl) impl = resolve_halves();   /* the same function whichever thread sets it first */
    impl(src, d, dst);
}

/* n float16 rows (ld halves apart, d values each) as contiguous float32 rows (n x d) in dst. */
void mmb_half_rows(const uint16_t *src, int64_t ld, int64_t d, int64_t n, float *dst) {
    for (int64_t r = 0; r < n; r++) halves(src + r * ld, d, dst + r * d);
}

/* The largest sum of squares of n rows (float32, or float16 with half = 1; ld values apart, d each),
 * each summed in double (the squares of floats are exact): rows with NaN are passed over, a row with
 * an infinity gives inf. 0 when every row has NaN (or n = 0). */
double mmb_max_sumsq(const void *rows, int32_t half, int64_t ld, int64_t d, int64_t n) {
    float buf[256];
    double best = 0.0;
    for (int64_t r = 0; r < n; r++) {
        double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t j0 = 0; j0 < d; j0 += 256) {
            int64_t w = d - j0 < 256 ? d - j0 : 256;
            const float *x = buf;
            if (half)
                halves((const uint16_t *)rows + r * ld + j0, w, buf);
            else
                x = (const float *)rows + r * ld + j0;
            for (int64_t j = 0; j < w; j++) a[j & 7] += (double)x[j] * (double)x[j];
        }
        double s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        if (s > best) best = s;   /* NaN is never > */
    }
    return best;
}

/* The re-score's sums. Each takes pairs (x, y) of a query row and a candidate row (float32, d
 * values each), computes the lanes l0..l7 (lane j adds the products (double)x[i] * (double)y[i]
 * for i = j, j+8, j+16, ... < d in that order, starting from +0.0) and returns
 * ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). Rows are never read past d: a SIMD step over the last,
 * partial group of 8 reads zeros there instead, and its products 0 * 0 = +0 change no lane (a
 * lane is never -0.0: it starts at +0.0, and a sum is -0.0 only when both terms are). The
 * product of two floats is exact in float64 (24 + 24 significand bits <= 53), so a fused
 * multiply-add gives the bits of a multiply then an add, and both paths below give the same bits:
 * AVX2 + FMA (lanes 0-3 and 4-7 in two registers, the floats cast to double in registers), and
 * the portable C loop (any CPU, aarch64 too; -O3 may vectorise its lanes, never reorder them).
 * The AVX2 path runs where the CPU has AVX2 and FMA (__builtin_cpu_supports, checked at each
 * call; no -march flag, so the library runs on any x86-64); mmb_set_simd can force the portable
 * one (tests check that both agree with numpy). Cost only: four pairs at once (four independent
 * chains), the four pairs of one query sharing each load and cast of the query's values. */

typedef struct {
    void (*shared4)(const float *x, const float *const *y, int64_t d, double *out);
    void (*pairs4)(const float *const *x, const float *const *y, int64_t d, double *out);
} rescore_kernels;

static inline double fold8(const double *l) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* y[j0 .. j0+8) as doubles, zeros past d (the portable path's tail and the AVX2 path's). */
static inline void tail8(const float *y, int64_t j0, int64_t d, double *t) {
    for (int64_t j = 0; j < 8; j++) t[j] = j0 + j < d ? (double)y[j0 + j] : 0.0;
}

static void dot_portable(const float *x, const float *y, int64_t d, double *out) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t[8], u[8];
    int64_t full = d - d % 8;
    for (int64_t j = 0; j < full; j += 8)
        for (int64_t l = 0; l < 8; l++) a[l] += (double)x[j + l] * (double)y[j + l];
    if (full < d) {
        tail8(x, full, d, u);
        tail8(y, full, d, t);
        for (int64_t l = 0; l < 8; l++) a[l] += u[l] * t[l];
    }
    *out = fold8(a);
}

static void shared4_portable(const float *x, const float *const *y, int64_t d, double *out) {
    for (int i = 0; i < 4; i++) dot_portable(x, y[i], d, out + i);
}

static void pairs4_portable(const float *const *x, const float *const *y, int64_t d, double *out) {
    for (int i = 0; i < 4; i++) dot_portable(x[i], y[i], d, out + i);
}

static const rescore_kernels kernels_portable = {shared4_portable, pairs4_portable};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))

TARGET_AVX2 static inline void fold_avx2(__m256d lo, __m256d hi, double *out) {
    double l[8];
    _mm256_storeu_pd(l, lo);
    _mm256_storeu_pd(l + 4, hi);
    *out = fold8(l);
}

/* One step of 8 values at j for pair i: its two accumulators (lanes 0-3, 4-7) += x * y. */
#define AVX2_STEP(XLO, XHI, Y, LO, HI)                                                             \
    LO = _mm256_fmadd_pd(XLO, _mm256_cvtps_pd(_mm_loadu_ps((Y) + j)), LO);                         \
    HI = _mm256_fmadd_pd(XHI, _mm256_cvtps_pd(_mm_loadu_ps((Y) + j + 4)), HI);

/* The last, partial group of 8 (d % 8 values), read into zero-padded buffers. */
TARGET_AVX2 static inline void avx2_tail(const float *x, const float *y, int64_t j, int64_t d, __m256d *lo,
                                         __m256d *hi) {
    double u[8], t[8];
    tail8(x, j, d, u);
    tail8(y, j, d, t);
    *lo = _mm256_fmadd_pd(_mm256_loadu_pd(u), _mm256_loadu_pd(t), *lo);
    *hi = _mm256_fmadd_pd(_mm256_loadu_pd(u + 4), _mm256_loadu_pd(t + 4), *hi);
}

TARGET_AVX2 static void shared4_avx2(const float *x, const float *const *y, int64_t d, double *out) {
    const float *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0, e1 = a0;
    int64_t full = d - d % 8, j = 0;
    for (; j < full; j += 8) {
        __m256d xlo = _mm256_cvtps_pd(_mm_loadu_ps(x + j)), xhi = _mm256_cvtps_pd(_mm_loadu_ps(x + j + 4));
        AVX2_STEP(xlo, xhi, y0, a0, a1)
        AVX2_STEP(xlo, xhi, y1, b0, b1)
        AVX2_STEP(xlo, xhi, y2, c0, c1)
        AVX2_STEP(xlo, xhi, y3, e0, e1)
    }
    if (j < d) {
        avx2_tail(x, y0, j, d, &a0, &a1);
        avx2_tail(x, y1, j, d, &b0, &b1);
        avx2_tail(x, y2, j, d, &c0, &c1);
        avx2_tail(x, y3, j, d, &e0, &e1);
    }
    fold_avx2(a0, a1, out);
    fold_avx2(b0, b1, out + 1);
    fold_avx2(c0, c1, out + 2);
    fold_avx2(e0, e1, out + 3);
}

TARGET_AVX2 static void pairs4_avx2(const float *const *x, const float *const *y, int64_t d, double *out) {
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0, e1 = a0;
    int64_t full = d - d % 8, j = 0;
    for (; j < full; j += 8) {
        AVX2_STEP(_mm256_cvtps_pd(_mm_loadu_ps(x0 + j)), _mm256_cvtps_pd(_mm_loadu_ps(x0 + j + 4)), y0, a0, a1)
        AVX2_STEP(_mm256_cvtps_pd(_mm_loadu_ps(x1 + j)), _mm256_cvtps_pd(_mm_loadu_ps(x1 + j + 4)), y1, b0, b1)
        AVX2_STEP(_mm256_cvtps_pd(_mm_loadu_ps(x2 + j)), _mm256_cvtps_pd(_mm_loadu_ps(x2 + j + 4)), y2, c0, c1)
        AVX2_STEP(_mm256_cvtps_pd(_mm_loadu_ps(x3 + j)), _mm256_cvtps_pd(_mm_loadu_ps(x3 + j + 4)), y3, e0, e1)
    }
    if (j < d) {
        avx2_tail(x0, y0, j, d, &a0, &a1);
        avx2_tail(x1, y1, j, d, &b0, &b1);
        avx2_tail(x2, y2, j, d, &c0, &c1);
        avx2_tail(x3, y3, j, d, &e0, &e1);
    }
    fold_avx2(a0, a1, out);
    fold_avx2(b0, b1, out + 1);
    fold_avx2(c0, c1, out + 2);
    fold_avx2(e0, e1, out + 3);
}

static const rescore_kernels kernels_avx2 = {shared4_avx2, pairs4_avx2};

static int cpu_simd_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
}
#else
static int cpu_simd_level(void) { return 0; }
#endif

static int simd_cap = 1;   /* mmb_set_simd */

/* Caps the re-score's SIMD path: 0 the portable C loop, 1 AVX2 + FMA where the CPU has them;
 * returns the level that then runs. Every level gives the same bits (for tests). */
int mmb_set_simd(int level) {
    simd_cap = level < 0 ? 0 : level;
    int have = cpu_simd_level();
    return have < simd_cap ? have : simd_cap;
}

static const rescore_kernels *pick_kernels(void) {
    int level = cpu_simd_level();
    if (level > simd_cap) level = simd_cap;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (level == 1) return &kernels_avx2;
#endif
    return &kernels_portable;
}

int mmb_rescore_grouped(const float *queries, const void *rows, int32_t half, int64_t ld, int64_t d,
                       int64_t block, int64_t n, const int64_t *order, const int64_t *qrow,
                       const int64_t *crow, double *out) {
    if (block < 1) block = 1;
    const rescore_kernels *k = pick_kernels();
    float *scratch = half ? malloc((size_t)block * (size_t)(d ? d : 1) * sizeof(float)) : NULL;
    int64_t *cast = half ? malloc((size_t)block * sizeof(int64_t)) : NULL;   /* per block row: the run that cast it */
    if (half && (!scratch || !cast)) {
        free(scratch);
        free(cast);
        return -1;
    }
    for (int64_t r = 0; half && r < block; r++) cast[r] = -1;
#define T(i) (order ? order[i] : (i))
#define X(t) (queries + qrow[t] * d)
#define Y(t) (half ? scratch + (crow[t] - b0) * d : (const float *)rows + crow[t] * ld)
    int64_t p = 0;
    while (p < n) {
        int64_t first = crow[T(p)], b0 = first - first % block, end = p;
        for (; end < n; end++) {   /* the run of pairs in this block; a float16 block's rows cast once */
            int64_t c = crow[T(end)];
            if (c < b0 || c - b0 >= block) break;
            if (!half || cast[c - b0] == p) continue;
            cast[c - b0] = p;
            halves((const uint16_t *)rows + c * ld, d, scratch + (c - b0) * d);
        }
        int64_t pend[4], waiting = 0;   /* pairs of different queries, summed four at a time */
        for (int64_t i = p; i < end;) {
            int64_t g = i + 1, t0 = T(i);
            while (g < end && qrow[T(g)] == qrow[t0]) g++;   /* i .. g: pairs of one query */
            for (; i + 4 <= g; i += 4) {
                int64_t t[4] = {T(i), T(i + 1), T(i + 2), T(i + 3)};
                const float *y[4] = {Y(t[0]), Y(t[1]), Y(t[2]), Y(t[3])};
                double o[4];
                k->shared4(X(t[0]), y, d, o);
                for (int j = 0; j < 4; j++) out[t[j]] = o[j];
            }
            for (; i < g; i++) {
                pend[waiting++] = T(i);
                if (waiting == 4) {
                    const float *x[4] = {X(pend[0]), X(pend[1]), X(pend[2]), X(pend[3])};
                    const float *y[4] = {Y(pend[0]), Y(pend[1]), Y(pend[2]), Y(pend[3])};
                    double o[4];
                    k->pairs4(x, y, d, o);
                    for (int j = 0; j < 4; j++) out[pend[j]] = o[j];
                    waiting = 0;
                }
            }
        }
        if (waiting) {   /* the last 1-3: padded with copies of the first, whose sums are dropped */
            const float *x[4];
            const float *y[4];
            double o[4];
            for (int j = 0; j < 4; j++) {
                int64_t t = pend[j < waiting ? j : 0];
                x[j] = X(t);
                y[j] = Y(t);
            }
            k->pairs4(x, y, d, o);
            for (int j = 0; j < waiting; j++) out[pend[j]] = o[j];
        }
        p = end;
    }
#undef T
#undef X
#undef Y
    free(scratch);
    free(cast);
    return 0;
}

/* order[0..n): the pairs' indices grouped by candidate block crow[t] / block (a stable counting
 * sort: within a block, the pairs keep their order). Every crow must be in [0, nblocks * block).
 * Returns 0, or -1 when memory ran out. */
int mmb_block_order(const int64_t *crow, int64_t n, int64_t block, int64_t nblocks, int64_t *order) {
    int64_t *start = calloc((size_t)nblocks + 1, sizeof(int64_t));
    if (!start) return -1;
    for (int64_t t = 0; t < n; t++) start[crow[t] / block + 1]++;
    for (int64_t b = 0; b < nblocks; b++) start[b + 1] += start[b];
    for (int64_t t = 0; t < n; t++) order[start[crow[t] / block]++] = t;
    free(start);
    return 0;
}

/* The rule's first n of each query's re-scored candidates (mmbench/search/ties.py): query i's
 * candidates are ids[offsets[i] .. offsets[i + 1]) (at least n of them) with float64 values r;
 * each is ranked by float32(r) descending, then keys[id] descending (the id where keys is NULL;
 * every key in [0, 2**32)), NaN after every number (as numpy's lexsort ranks them). Writes
 * out_ids / out_scores (nq x n, row-major; scores float32(r)). Returns 0, or -1 when memory ran
 * out. */
int mmb_rank_rescored(int64_t nq, const int64_t *offsets, const int64_t *ids, const double *r,
                      const int64_t *keys, int64_t n, int64_t *out_ids, float *out_scores) {
    ranked *order = NULL;
    int64_t size = 0;
    for (int64_t i = 0; i < nq; i++) {
        int64_t a = offsets[i], c = offsets[i + 1] - a;
        if (c > size) {
            ranked *grown = realloc(order, 2 * (size_t)c * sizeof(ranked));   /* the entries, then scratch */
            if (!grown) {
                free(order);
                return -1;
            }
            order = grown;
            size = c;
        }
        for (int64_t j = 0; j < c; j++) {
            int64_t id = ids[a + j];
            float score = (float)r[a + j];
            uint64_t key = (uint64_t)(keys ? keys[id] : id);
            order[j].key = score != score ? ~key : order_key(score, key);   /* NaN: after -inf */
            order[j].id = id;
            order[j].score = score;
        }
        radix_ranked(order, order + size, c);
        for (int64_t j = 0; j < n; j++) {
            out_ids[i * n + j] = j < c ? order[j].id : -1;
            out_scores[i * n + j] = j < c ? order[j].score : -INFINITY;
        }
    }
    free(order);
    return 0;
}
