/*
 * Latency histograms in shared memory, so that every process records into the same one without
 * a lock. Buckets are fixed and log-scale (1, 2 and 5 times each power of ten, from 100 us to
 * 50 s, then one for anything larger), which is what the Prometheus exposition needs.
 */
#ifndef INCSEARCHD_HISTOGRAM_H
#define INCSEARCHD_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>

#define HISTOGRAM_BUCKETS 19 /* 18 finite upper bounds and the last one for larger values */

struct histogram {
        _Atomic uint64_t buckets[HISTOGRAM_BUCKETS]; /* not cumulative: each counts its own range */
        _Atomic uint64_t count;
        _Atomic uint64_t sum_us;
        _Atomic uint64_t max_us;
};

/* Counts one value of US microseconds. Safe from any process at any time. */
void histogram_record(struct histogram *h, uint64_t us);

/* Returns the upper bound of bucket I in microseconds, or UINT64_MAX for the last bucket. */
uint64_t histogram_bound_us(unsigned i);

/*
 * Returns an estimate of the PERCENT (0 to 100) percentile in microseconds: the upper bound of
 * the bucket that contains that rank, capped at the largest value recorded. Returns 0 when empty.
 */
uint64_t histogram_percentile_us(const struct histogram *h, unsigned percent);

#endif
