// The thread count every CPU call uses: OpenMP's, so OMP_NUM_THREADS works as usual.
#include <omp.h>

#include "genesis/cpu.h"

namespace genesis::cpu {

int num_threads() { return omp_get_max_threads(); }
void set_num_threads(int n) { omp_set_num_threads(n); }

}  // namespace genesis::cpu
