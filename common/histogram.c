#include "histogram.h"

static const uint64_t histogram_bounds_us[HISTOGRAM_BUCKETS - 1] = {
    100,    200,    500,    1000,    2000,    5000,    10000,    20000,    50000,
    100000, 200000, 500000, 1000000, 2000000, 5000000, 10000000, 20000000, 50000000,
};

uint64_t histogram_bound_us(unsigned i)
{
        return i < HISTOGRAM_BUCKETS - 1 ? histogram_bounds_us[i] : UINT64_MAX;
}

void histogram_record(struct histogram *h, uint64_t us)
{
        unsigned i = 0;
        uint64_t max;

        while (i < HISTOGRAM_BUCKETS - 1 && us > histogram_bounds_us[i])
                i++;
        atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);

        max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
        while (us > max && !atomic_compare_exchange_weak_explicit(
                               &h->max_us, &max, us, memory_order_relaxed, memory_order_relaxed))
                ;
}

uint64_t histogram_percentile_us(const struct histogram *h, unsigned percent)
{
        uint64_t counts[HISTOGRAM_BUCKETS], total = 0, rank, seen = 0;
        uint64_t max = atomic_load_explicit(&h->max_us, memory_order_relaxed);

        /* Sum the buckets read here rather than the count field, which other processes may have
         * moved on since. */
        for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
                counts[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
                total += counts[i];
        }
        if (total == 0)
                return 0;
        if (percent > 100)
                percent = 100;
        rank = (total * percent + 99) / 100;
        if (rank == 0)
                rank = 1;
        for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
                seen += counts[i];
                if (seen >= rank) {
                        uint64_t bound = histogram_bound_us(i);

                        return bound < max ? bound : max;
                }
        }
        return max;
}
