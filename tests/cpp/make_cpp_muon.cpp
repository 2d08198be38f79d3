// Writes tests/cpp/data/cpp_muon.genesis: the state_dict of the genesis::Muon run of
// muon_fixture.h after its steps, plus the parameters it reached under the extra root key
// "params" (float32 matrices), for tests/test_cpp_muon.py to compare with genesis.optim.Muon.
// Usage: make_cpp_muon OUTPUT [EXPECTED] (fixture_file.h).
#include "fixture_file.h"
#include "muon_fixture.h"

#include <cstring>
#include <string>
#include <utility>

int main(int argc, char** argv) {
  using genesis::checkpoint::Value;
  const MuonFixture run;
  genesis::checkpoint::Document doc = run.opt.state_dict();
  Value params = Value::list();
  for (const MuonFixture::Matrix& m : run.params) {
    params.items.push_back(Value::array_ref(static_cast<int64_t>(doc.arrays.size())));
    std::vector<unsigned char> bytes(m.value.size() * sizeof(float));
    std::memcpy(bytes.data(), m.value.data(), bytes.size());
    doc.arrays.push_back({genesis::DType::Float32, {m.rows, m.cols}, std::move(bytes)});
  }
  doc.root.set(Value::of(std::string("params")), std::move(params));
  return write_fixture(doc, argc, argv);
}
