/* Exact search for static memory allocation: the C core of masic.memplan.exact.
 *
 * Given buffers (half-open lifetimes [lower, upper), sizes, alignments, optional fixed offsets) and a capacity,
 * finds offsets such that buffers alive at the same time never share a byte and every buffer ends at or below the
 * capacity, or proves that none exist, or gives up at a deadline. The search is the one of MiniMalloc (Moffitt,
 * ASPLOS 2023; google/minimalloc src/solver.cc, src/sweeper.cc), rewritten in C:
 *
 * - Sections. A sweep over the lifetimes cuts time at every buffer end; a section is the set of buffers alive just
 *   before such an end (the largest set alive since the previous end), so every moment's live set is a subset of
 *   some section. Each buffer covers a contiguous range of sections [first, last).
 * - Canonical placements. Buffers are placed one at a time at their lowest feasible offset ("min offset": the top,
 *   rounded up to the buffer's alignment, of the placed buffers that overlap it in time), and placement offsets
 *   never decrease along a branch; among buffers at the same offset, a static rank (the preordering) fixes the
 *   order. Every feasible solution can be pushed down into such a canonical one, so nothing is lost.
 * - Branching. A node tries the unplaced buffers in order of (min offset, rank).
 * - Pruning. (1) Cross sections: in every section, max(floor, current offset) + the sizes of its unplaced buffers
 *   must fit the capacity; a section's floor is the top of the last buffer placed in it, raised to the lowest min
 *   offset of its unplaced buffers. (2) Dominance: a buffer is never placed at or above the lowest top any unplaced
 *   buffer could reach (it would leave a gap that buffer fits in). (3) Hatless: if the buffer just placed overlaps
 *   no unplaced buffer and its subtree failed, its siblings fail too. (4) A fixed-offset buffer whose min offset
 *   passes its fixed offset fails the branch.
 * - Decomposition. When no unplaced buffer crosses the boundary between two sections any more, the two sides are
 *   independent subproblems, solved one after the other (each with its own preordering and canonical order).
 * - Round robin. The preorderings WAT, TAW, TWA (W = lifetime width, A = area = size x width, T = largest
 *   unplaced bytes in any of the buffer's sections; each descending, ties by index) are tried in turn with a node
 *   limit that doubles every round, starting at 2n, so one lucky ordering finishes early.
 *
 * All state lives in one Search struct (no globals), so concurrent calls from different threads are safe. Values
 * are 64-bit (offsets and sizes of real traces exceed 2^32).
 */
#define _POSIX_C_SOURCE 199309L

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MEMPLAN_FOUND 1
#define MEMPLAN_INFEASIBLE 0
#define MEMPLAN_TIMEOUT (-1)
#define MEMPLAN_NO_MEMORY (-2)
#define MEMPLAN_ABORTED (-3) /* internal: the round's node limit ran out */
#define SWEEP_CLOCK_EVERY 65536 /* events the sweep handles between deadline checks */

enum { CHANGE_MIN_OFFSET, CHANGE_FLOOR };

typedef struct {
    int32_t kind;
    int32_t index;
    int64_t old;
} Change;

typedef struct {
    double key[3]; /* floating point: size x width may pass 2^63; only the order matters */
    int32_t buffer;
} Preorder;

typedef struct {
    int32_t n, sections;
    const int64_t *lower, *upper, *size, *align, *fixed;
    int64_t capacity;
    /* From the sweep. */
    int32_t *first, *last;               /* each buffer's section range [first, last) */
    int32_t *by_first, *first_pos;       /* buffers sorted by first section; where each section's run starts */
    int32_t *overlap_start, *overlaps;   /* CSR: the buffers overlapping each buffer in time */
    int32_t *member_start, *members;     /* CSR: the buffers of each section */
    /* Search state; every change is undone on the way back up. */
    int64_t *offset, *min_offset, *solution, *floor, *total;
    int32_t *rank, *cuts, *affected;
    int64_t *stamp, stamp_now;
    Change *trail;
    size_t trail_len, trail_cap;
    /* Control. */
    const char *heuristic;
    int64_t nodes_remaining, nodes, backtracks;
    double deadline;
    int failed;
} Search;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t align_up(int64_t value, int64_t alignment) {
    int64_t rem = value % alignment;
    return rem ? value + alignment - rem : value;
}

static void record(Search *S, int32_t kind, int32_t index, int64_t old) {
    if (S->trail_len == S->trail_cap) {
        size_t cap = S->trail_cap ? 2 * S->trail_cap : 1024;
        Change *grown = realloc(S->trail, cap * sizeof(Change));
        if (!grown) {
            S->failed = 1;
            return;
        }
        S->trail = grown;
        S->trail_cap = cap;
    }
    S->trail[S->trail_len++] = (Change){kind, index, old};
}

static void undo(Search *S, size_t mark) {
    while (S->trail_len > mark) {
        Change c = S->trail[--S->trail_len];
        if (c.kind == CHANGE_MIN_OFFSET) {
            S->min_offset[c.index] = c.old;
        } else {
            S->floor[c.index] = c.old;
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Sweep: sections, buffer section ranges, time overlaps, cuts.
 */

typedef struct {
    int64_t time;
    int32_t is_start; /* ends sort before starts at the same time: lifetimes are half-open */
    int32_t buffer;
} Event;

static int compare_events(const void *pa, const void *pb) {
    const Event *a = pa, *b = pb;
    if (a->time != b->time) return a->time < b->time ? -1 : 1;
    if (a->is_start != b->is_start) return a->is_start - b->is_start;
    return (a->buffer > b->buffer) - (a->buffer < b->buffer);
}

typedef struct {
    int32_t *data;
    size_t len, cap;
} IntVec;

static int push_int(IntVec *v, int32_t x) {
    if (v->len == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        int32_t *grown = realloc(v->data, cap * sizeof(int32_t));
        if (!grown) return 0;
        v->data = grown;
        v->cap = cap;
    }
    v->data[v->len++] = x;
    return 1;
}

/* Fills first/last, the section and overlap CSR arrays and by_first/first_pos. Returns 1, or 0 when out of memory,
 * or MEMPLAN_TIMEOUT when the deadline passes first (a sweep over 20M overlapping pairs takes a while). */
static int sweep(Search *S) {
    int32_t n = S->n;
    Event *events = malloc(2 * (size_t)n * sizeof(Event));
    int32_t *active = malloc((size_t)n * sizeof(int32_t)), *where = malloc((size_t)n * sizeof(int32_t));
    IntVec pairs = {0}, members = {0}, member_start = {0};
    int ok = events && active && where;
    for (int32_t b = 0; ok && b < n; b++) {
        events[2 * b] = (Event){S->lower[b], 1, b};
        events[2 * b + 1] = (Event){S->upper[b], 0, b};
    }
    if (ok) qsort(events, 2 * (size_t)n, sizeof(Event), compare_events);
    int32_t nactive = 0, nsec = 0;
    int64_t last_time = INT64_MIN;
    int timed_out = 0;
    for (size_t e = 0; ok && e < 2 * (size_t)n; e++) {
        if (e % SWEEP_CLOCK_EVERY == 0 && now_seconds() > S->deadline) {
            timed_out = 1;
            break;
        }
        int32_t b = events[e].buffer;
        if (events[e].is_start) {
            for (int32_t i = 0; ok && i < nactive; i++) ok = push_int(&pairs, active[i]) && push_int(&pairs, b);
            where[b] = nactive;
            active[nactive++] = b;
            S->first[b] = nsec;
        } else {
            if (events[e].time > last_time) { /* a new section: everything alive just before this end */
                last_time = events[e].time;
                ok = push_int(&member_start, (int32_t)members.len);
                for (int32_t i = 0; ok && i < nactive; i++) ok = push_int(&members, active[i]);
                nsec++;
            }
            int32_t moved = active[--nactive];
            active[where[b]] = moved;
            where[moved] = where[b];
            S->last[b] = nsec;
        }
    }
    ok = ok && push_int(&member_start, (int32_t)members.len);
    S->sections = nsec;
    S->member_start = member_start.data;
    S->members = members.data;
    free(events);
    free(active);
    free(where);
    if (!ok || timed_out) {
        free(pairs.data);
        return timed_out ? MEMPLAN_TIMEOUT : 0;
    }
    /* Overlaps in CSR form, both directions. */
    S->overlap_start = calloc((size_t)n + 1, sizeof(int32_t));
    S->overlaps = malloc((pairs.len ? pairs.len : 1) * sizeof(int32_t));
    if (!S->overlap_start || !S->overlaps) {
        free(pairs.data);
        return 0;
    }
    for (size_t p = 0; p < pairs.len; p++) S->overlap_start[pairs.data[p] + 1]++;
    for (int32_t b = 0; b < n; b++) S->overlap_start[b + 1] += S->overlap_start[b];
    int32_t *fill = malloc((size_t)n * sizeof(int32_t));
    if (!fill) {
        free(pairs.data);
        return 0;
    }
    memcpy(fill, S->overlap_start, (size_t)n * sizeof(int32_t));
    for (size_t p = 0; p < pairs.len; p += 2) {
        S->overlaps[fill[pairs.data[p]]++] = pairs.data[p + 1];
        S->overlaps[fill[pairs.data[p + 1]]++] = pairs.data[p];
    }
    free(fill);
    free(pairs.data);
    /* Buffers by first section (a counting sort), so a range of sections owns a contiguous run of buffers. */
    S->first_pos = calloc((size_t)nsec + 2, sizeof(int32_t));
    S->by_first = malloc((size_t)n * sizeof(int32_t));
    if (!S->first_pos || !S->by_first) return 0;
    for (int32_t b = 0; b < n; b++) S->first_pos[S->first[b] + 1]++;
    for (int32_t s = 0; s <= nsec; s++) S->first_pos[s + 1] += S->first_pos[s];
    int32_t *next = malloc(((size_t)nsec + 1) * sizeof(int32_t));
    if (!next) return 0;
    memcpy(next, S->first_pos, ((size_t)nsec + 1) * sizeof(int32_t));
    for (int32_t b = 0; b < n; b++) S->by_first[next[S->first[b]]++] = b;
    free(next);
    return 1;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Search.
 */

static int search(Search *S, int32_t s0, int32_t s1, int64_t min_offset, int32_t min_rank);
static int solve_ranges(Search *S, int32_t s0, int32_t s1);

static int compare_preorder(const void *pa, const void *pb) {
    const Preorder *a = pa, *b = pb;
    for (int k = 0; k < 3; k++) {
        if (a->key[k] != b->key[k]) return a->key[k] > b->key[k] ? -1 : 1; /* descending */
    }
    return (a->buffer > b->buffer) - (a->buffer < b->buffer);
}

/* Ranks the unplaced buffers of sections [s0, s1) by the current heuristic and searches them from offset 0. */
static int subsolve(Search *S, int32_t s0, int32_t s1) {
    int32_t lo = S->first_pos[s0], hi = S->first_pos[s1], k = 0;
    for (int32_t p = lo; p < hi; p++) k += S->offset[S->by_first[p]] < 0;
    if (k == 0) return MEMPLAN_FOUND;
    Preorder *pre = malloc((size_t)k * sizeof(Preorder));
    int32_t *saved = malloc((size_t)k * sizeof(int32_t));
    if (!pre || !saved) {
        free(pre);
        free(saved);
        S->failed = 1;
        return MEMPLAN_NO_MEMORY;
    }
    k = 0;
    for (int32_t p = lo; p < hi; p++) {
        int32_t b = S->by_first[p];
        if (S->offset[b] >= 0) continue;
        int64_t most = 0;
        for (int32_t s = S->first[b]; s < S->last[b]; s++) most = S->total[s] > most ? S->total[s] : most;
        double width = (double)(S->upper[b] - S->lower[b]);
        for (int j = 0; j < 3; j++) {
            char c = S->heuristic[j];
            pre[k].key[j] = c == 'W' ? width : c == 'A' ? width * (double)S->size[b] : (double)most;
        }
        pre[k++].buffer = b;
    }
    qsort(pre, (size_t)k, sizeof(Preorder), compare_preorder);
    for (int32_t i = 0; i < k; i++) {
        saved[i] = S->rank[pre[i].buffer];
        S->rank[pre[i].buffer] = i;
    }
    int result = search(S, s0, s1, 0, 0);
    for (int32_t i = 0; i < k; i++) S->rank[pre[i].buffer] = saved[i];
    free(pre);
    free(saved);
    return result;
}

/* Solves sections [s0, s1) as independent subproblems split at every boundary no unplaced buffer crosses. */
static int solve_ranges(Search *S, int32_t s0, int32_t s1) {
    int32_t start = s0;
    for (int32_t s = s0; s < s1; s++) {
        if (s + 1 < s1 && S->cuts[s] != 0) continue;
        int result = subsolve(S, start, s + 1);
        if (result != MEMPLAN_FOUND) return result;
        start = s + 1;
    }
    return MEMPLAN_FOUND;
}

/* Cross-section check: every section must hold its unplaced bytes above max(floor, offset). */
static int sections_fit(const Search *S, int32_t s0, int32_t s1, int64_t offset) {
    for (int32_t s = s0; s < s1; s++) {
        int64_t floor = S->floor[s] > offset ? S->floor[s] : offset;
        if (floor + S->total[s] > S->capacity) return 0;
    }
    return 1;
}

/* Continues after placing buffer b: in the same subproblem, or in the pieces it cut the subproblem into. */
static int descend(Search *S, int32_t s0, int32_t s1, int32_t b, int64_t offset) {
    int split = 0;
    for (int32_t s = S->first[b]; s + 1 < S->last[b]; s++) split |= --S->cuts[s] == 0;
    int result = split ? solve_ranges(S, s0, s1) : search(S, s0, s1, offset, S->rank[b]);
    for (int32_t s = S->first[b]; s + 1 < S->last[b]; s++) S->cuts[s]++;
    return result;
}

/* Places buffer b at offset, propagates, recurses, and undoes everything. *hatless is set when b overlaps no
 * unplaced buffer. */
static int place(Search *S, int32_t s0, int32_t s1, int32_t b, int64_t offset, int *hatless) {
    size_t mark = S->trail_len;
    int64_t top = offset + S->size[b];
    int32_t naffected = 0;
    int fixed_failure = 0;
    S->offset[b] = offset;
    S->solution[b] = offset;
    S->stamp_now++;
    *hatless = 1;
    for (int32_t i = S->overlap_start[b]; i < S->overlap_start[b + 1]; i++) {
        int32_t o = S->overlaps[i];
        if (S->offset[o] >= 0) continue;
        *hatless = 0;
        if (S->min_offset[o] >= top) continue;
        record(S, CHANGE_MIN_OFFSET, o, S->min_offset[o]);
        S->min_offset[o] = align_up(top, S->align[o]);
        fixed_failure |= S->fixed[o] >= 0 && S->min_offset[o] > S->fixed[o];
        for (int32_t s = S->first[o]; s < S->last[o]; s++) {
            if (S->stamp[s] == S->stamp_now) continue;
            S->stamp[s] = S->stamp_now;
            S->affected[naffected++] = s;
        }
    }
    for (int32_t s = S->first[b]; s < S->last[b]; s++) {
        record(S, CHANGE_FLOOR, s, S->floor[s]);
        S->floor[s] = top;
        S->total[s] -= S->size[b];
    }
    for (int32_t i = 0; i < naffected; i++) { /* a section's floor is at least its lowest unplaced min offset */
        int32_t s = S->affected[i];
        int64_t lowest = INT64_MAX;
        for (int32_t m = S->member_start[s]; m < S->member_start[s + 1]; m++) {
            int32_t x = S->members[m];
            if (S->offset[x] < 0 && S->min_offset[x] < lowest) lowest = S->min_offset[x];
        }
        if (lowest != INT64_MAX && S->floor[s] < lowest) {
            record(S, CHANGE_FLOOR, s, S->floor[s]);
            S->floor[s] = lowest;
        }
    }
    int result = MEMPLAN_INFEASIBLE;
    if (S->failed) {
        result = MEMPLAN_NO_MEMORY;
    } else if (!fixed_failure && sections_fit(S, s0, s1, offset)) {
        result = descend(S, s0, s1, b, offset);
    }
    for (int32_t s = S->first[b]; s < S->last[b]; s++) S->total[s] += S->size[b];
    undo(S, mark);
    S->offset[b] = -1;
    return result;
}

/* Depth-first search over the unplaced buffers of sections [s0, s1), canonical after (min_offset, min_rank). */
static int search(Search *S, int32_t s0, int32_t s1, int64_t min_offset, int32_t min_rank) {
    if (S->failed) return MEMPLAN_NO_MEMORY;
    if (S->nodes_remaining-- <= 0) return MEMPLAN_ABORTED;
    S->nodes++;
    if (now_seconds() > S->deadline) return MEMPLAN_TIMEOUT; /* a vDSO call: cheap next to a node's scans */
    int32_t lo = S->first_pos[s0], hi = S->first_pos[s1];
    int64_t min_height = INT64_MAX;
    for (int32_t p = lo; p < hi; p++) {
        int32_t b = S->by_first[p];
        if (S->offset[b] < 0 && S->min_offset[b] + S->size[b] < min_height) {
            min_height = S->min_offset[b] + S->size[b];
        }
    }
    if (min_height == INT64_MAX) return MEMPLAN_FOUND; /* every buffer of this subproblem is placed */
    for (;;) {
        /* The next candidate in (min offset, rank) order at or after (min_offset, min_rank). */
        int32_t best = -1, best_rank = 0;
        int64_t best_offset = 0;
        for (int32_t p = lo; p < hi; p++) {
            int32_t b = S->by_first[p], r = S->rank[b];
            int64_t o = S->min_offset[b];
            if (S->offset[b] >= 0 || o < min_offset || (o == min_offset && r < min_rank)) continue;
            if (best < 0 || o < best_offset || (o == best_offset && r < best_rank)) {
                best = b;
                best_offset = o;
                best_rank = r;
            }
        }
        if (best < 0 || best_offset >= min_height) break; /* dominance: later candidates leave a gap */
        min_offset = best_offset;
        min_rank = best_rank + 1;
        int hatless;
        int result = place(S, s0, s1, best, best_offset, &hatless);
        if (result != MEMPLAN_INFEASIBLE) return result;
        if (hatless) break;
    }
    S->backtracks++;
    return MEMPLAN_INFEASIBLE;
}

static void release(Search *S) {
    free(S->first);
    free(S->last);
    free(S->by_first);
    free(S->first_pos);
    free(S->overlap_start);
    free(S->overlaps);
    free(S->member_start);
    free(S->members);
    free(S->offset);
    free(S->min_offset);
    free(S->solution);
    free(S->floor);
    free(S->total);
    free(S->rank);
    free(S->cuts);
    free(S->affected);
    free(S->stamp);
    free(S->trail);
}

/* The entry point. Buffers must have lower < upper, size > 0, alignment >= 1 and fixed offsets (-1: free) that are
 * multiples of their alignment. timeout < 0 means no deadline. On MEMPLAN_FOUND, offsets[] holds the placement;
 * stats[0] and stats[1] receive the nodes visited and the backtracks. Returns MEMPLAN_FOUND, MEMPLAN_INFEASIBLE
 * (proved: no placement fits the capacity), MEMPLAN_TIMEOUT or MEMPLAN_NO_MEMORY. */
int memplan_search(int32_t n, const int64_t *lower, const int64_t *upper, const int64_t *size,
                   const int64_t *alignment, const int64_t *fixed, int64_t capacity, double timeout,
                   int64_t *offsets, int64_t *stats) {
    static const char *const heuristics[] = {"WAT", "TAW", "TWA"};
    Search S = {0};
    S.n = n;
    S.lower = lower;
    S.upper = upper;
    S.size = size;
    S.align = alignment;
    S.fixed = fixed;
    S.capacity = capacity;
    S.deadline = timeout < 0 ? 1e300 : now_seconds() + timeout;
    stats[0] = stats[1] = 0;
    if (n == 0) return MEMPLAN_FOUND;
    size_t nn = (size_t)n;
    S.first = malloc(nn * sizeof(int32_t));
    S.last = malloc(nn * sizeof(int32_t));
    int swept = S.first && S.last ? sweep(&S) : 0;
    if (swept != 1) {
        release(&S);
        return swept == MEMPLAN_TIMEOUT ? MEMPLAN_TIMEOUT : MEMPLAN_NO_MEMORY;
    }
    size_t ns = (size_t)S.sections;
    S.offset = malloc(nn * sizeof(int64_t));
    S.min_offset = malloc(nn * sizeof(int64_t));
    S.solution = malloc(nn * sizeof(int64_t));
    S.rank = calloc(nn, sizeof(int32_t));
    S.floor = calloc(ns, sizeof(int64_t));
    S.total = calloc(ns, sizeof(int64_t));
    S.cuts = calloc(ns, sizeof(int32_t));
    S.affected = malloc(ns * sizeof(int32_t));
    S.stamp = calloc(ns, sizeof(int64_t));
    if (!S.offset || !S.min_offset || !S.solution || !S.rank || !S.floor || !S.total || !S.cuts || !S.affected ||
        !S.stamp) {
        release(&S);
        return MEMPLAN_NO_MEMORY;
    }
    for (int32_t b = 0; b < n; b++) {
        S.offset[b] = -1;
        S.min_offset[b] = fixed[b] >= 0 ? fixed[b] : 0;
        for (int32_t s = S.first[b]; s < S.last[b]; s++) S.total[s] += size[b];
        for (int32_t s = S.first[b]; s + 1 < S.last[b]; s++) S.cuts[s]++;
    }
    int result = MEMPLAN_ABORTED;
    for (int64_t limit = 2 * (int64_t)n; result == MEMPLAN_ABORTED; limit = limit < INT64_MAX / 2 ? 2 * limit : limit) {
        for (int h = 0; h < 3 && result == MEMPLAN_ABORTED; h++) {
            S.heuristic = heuristics[h];
            S.nodes_remaining = limit;
            result = solve_ranges(&S, 0, S.sections);
        }
    }
    if (S.failed) result = MEMPLAN_NO_MEMORY;
    if (result == MEMPLAN_FOUND) memcpy(offsets, S.solution, nn * sizeof(int64_t));
    stats[0] = S.nodes;
    stats[1] = S.backtracks;
    release(&S);
    return result;
}
