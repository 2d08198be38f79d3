// How many threads a parallel region of the CPU core gets (NOTE: [threads and fork] in
// threads.cpp).
#pragma once

namespace genesis::cpu {

// The team size for a region worth running in parallel (`parallel`: its work is above its
// threshold), 1 otherwise; every `omp parallel` of the core passes it as num_threads.
int region_threads(bool parallel);

}  // namespace genesis::cpu
