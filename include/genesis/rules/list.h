// The update rules genesis implements: the lists every per-rule piece is generated from (CPU
// and CUDA instantiations, C++ API classes, Python bindings). Element-wise rules, then the
// reduction rules (NOTE: [reduction rules] in include/genesis/reduce.h); GENESIS_RULES is both.
//
// A rule is one line here, X(header, Options, CppClass):
//   header    include/genesis/rules/<header>.h holds the math and RuleSpec<Options>; also the
//             name of the Python plan method and of the generated kernel files
//   Options   its options struct (bound to Python under the same name)
//   CppClass  the C++ API class (genesis::CppClass = RuleOptimizer<Options>)
// CMakeLists.txt reads the X(...) lines of this file, so keep one entry per line.
#pragma once

#include "genesis/rules/adadelta.h"
#include "genesis/rules/adafactor.h"
#include "genesis/rules/adagrad.h"
#include "genesis/rules/adam.h"
#include "genesis/rules/adamax.h"
#include "genesis/rules/asgd.h"
#include "genesis/rules/lamb.h"
#include "genesis/rules/lion.h"
#include "genesis/rules/muon.h"
#include "genesis/rules/nadam.h"
#include "genesis/rules/radam.h"
#include "genesis/rules/rmsprop.h"
#include "genesis/rules/rprop.h"
#include "genesis/rules/sgd.h"

#define GENESIS_ELEMENTWISE_RULES(X)     \
  X(sgd, SgdOptions, SGD)                \
  X(adam, AdamOptions, Adam)             \
  X(rmsprop, RmspropOptions, RMSprop)    \
  X(adagrad, AdagradOptions, Adagrad)    \
  X(adadelta, AdadeltaOptions, Adadelta) \
  X(adamax, AdamaxOptions, Adamax)       \
  X(nadam, NadamOptions, NAdam)          \
  X(radam, RadamOptions, RAdam)          \
  X(asgd, AsgdOptions, ASGD)             \
  X(rprop, RpropOptions, Rprop)          \
  X(lion, LionOptions, Lion)

#define GENESIS_REDUCTION_RULES(X) \
  X(lamb, LambOptions, LAMB)       \
  X(adafactor, AdafactorOptions, Adafactor)

#define GENESIS_RULES(X) GENESIS_ELEMENTWISE_RULES(X) GENESIS_REDUCTION_RULES(X)

// Element-wise stages of optimizers whose step is more than one element-wise pass: each gets
// the CPU and CUDA entry points, its Python options class and plan method like a rule above,
// but no optimizer class of its own (no C++ API class, not in _C.RULES). Same X(header,
// Options, Owner) form, Owner being the optimizer the stage belongs to; CMakeLists.txt reads
// these lines too.
//   muon_momentum, muon_update  before and after Muon's Newton-Schulz matrix products
#define GENESIS_STAGE_RULES(X)                \
  X(muon_momentum, MuonMomentumOptions, Muon) \
  X(muon_update, MuonUpdateOptions, Muon)
