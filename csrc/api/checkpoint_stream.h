// The checkpoint codec's byte streams (internal): the format code in checkpoint.cpp writes to a
// Sink and reads from a Source, so that memory (encode/decode) and files (save_file/load_file
// in checkpoint_file.cpp) share one implementation and files need no intermediate copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "genesis/checkpoint.h"

namespace genesis::checkpoint {

struct Sink {
  virtual ~Sink() = default;
  virtual void write(const unsigned char* data, size_t n) = 0;
};

struct Source {
  virtual ~Source() = default;
  // Fills dst with the next n bytes; throws CheckpointError if the stream ends first.
  virtual void read(unsigned char* dst, size_t n) = 0;
};

// A document checked and laid out for writing: its header and the arrays in file order.
struct Plan {
  std::string header;
  std::vector<const Array*> arrays;
};

// Validates `doc` (std::invalid_argument) and lays it out; nothing is written yet.
Plan plan(const Document& doc);
void write(const Plan& plan, Sink& sink);
// Reads one checkpoint of exactly `size` bytes from `source`, validating everything.
Document read(Source& source, uint64_t size);

}  // namespace genesis::checkpoint
