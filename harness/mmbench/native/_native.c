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

/* Keep only row r's candidates at or above its `k`-th largest kept score (ties stay), and raise
   the row's threshold to that score. */
static int compact(state *st, int64_t r, int64_t k, scratch *s) {
    int64_t n = st->count[r];
    hit *kept = st->kept[r];
    if (n <= k) return 0;
    if (scratch_fit(s, n)) return -1;
    for (int64_t i = 0; i < n; i++) s->values[i] = kept[i].score;
    float t = kth_largest(s->values, n, k);
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++)
        if (kept[i].score >= t) kept[w++] = kept[i];
    st->count[r] = w;
    if (t > st->threshold[r]) st->threshold[r] = t;
    return 0;
}

/* Row r's buffer is full: compact it, and grow it while it stays over half full (ties). */
static int make_room(state *st, int64_t r, scratch *s) {
    if (compact(st, r, st->k, s)) return -1;
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
            if (!(score >= st->threshold[r])) continue;
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
    for (int64_t i = 0; i < nr; i++)
        if (thresholds[i] > st->threshold[r0 + i]) st->threshold[r0 + i] = thresholds[i];
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
 * margin): out[p] = the float64 inner product of query row qrow[p] of q (nq x d float32, row-major)
 * and candidate row crow[p] of rows (float32, ld floats apart), the d exact float64 products added
 * in a fixed order: lane j (j < 8) accumulates products j, j+8, j+16, ... left to right (the row
 * padded with zeros to a multiple of 8), then ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). The products of
 * two floats are exact in double, so a fused multiply-add gives the same bits as a multiply then an
 * add: the compiler may contract or vectorise the lanes, never reorder them. numpy's elementwise
 * version in rescore.py gives the same bits (tests check it). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("arch=x86-64-v3", "default")))   /* AVX2 + FMA where the CPU has them: same bits */
#endif
void mmb_rescore_pairs(const float *q, int64_t d, const float *rows, int64_t ld, int64_t n,
                       const int64_t *qrow, const int64_t *crow, double *out) {
    for (int64_t p = 0; p < n; p++) {
        const float *x = q + qrow[p] * d, *y = rows + crow[p] * ld;
        double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = 0;
        for (; i + 8 <= d; i += 8)
            for (int j = 0; j < 8; j++) l[j] += (double)x[i + j] * (double)y[i + j];
        for (int j = 0; i + j < d; j++) l[j] += (double)x[i + j] * (double)y[i + j];
        out[p] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }
}
