// Hyperparameter checks shared by the C++ API and the Python optimizers (messages follow
// torch.optim's). Each rule's checks live in its RuleSpec (include/genesis/rules/<rule>.h);
// validate() throws std::invalid_argument naming the value.
#pragma once

#include "genesis/rules/list.h"

namespace genesis {

template <typename Options>
void validate(const Options& o) {
  RuleSpec<Options>::validate(o);
}

}  // namespace genesis
