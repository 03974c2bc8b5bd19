// safetensors data I/O: read tensors at known offsets, write a file from a header and tensors.
//
// The header (u64 LE length + JSON) is parsed and validated on the TypeScript side
// (lib/engine/safetensors.ts): it hands us a table of records whose offsets are absolute file
// positions. We still check every range against the real file size, because a file can
// change or be truncated between the header read and the data read.
#pragma once

#include "core/torch_prelude.h"

#include <functional>

namespace octo {

// One tensor inside a safetensors file.
struct TensorRecord {
  std::string name;
  std::string file;            // path of the .safetensors file
  at::ScalarType dtype;        // dtype stored in the file
  std::vector<int64_t> shape;
  int64_t offset = 0;          // absolute byte offset of the data in the file
  int64_t byteLength = 0;      // numel * itemsize
};

// "F32" / "BF16" / ... -> ScalarType; throws naming the dtype for unknown ones.
at::ScalarType scalarTypeFromSafetensors(const std::string& dtype);
std::string safetensorsDtypeName(at::ScalarType type);

// Reads many records, opening each file once. Tensors are CPU, in the file's dtype.
class SafetensorsReader {
 public:
  SafetensorsReader() = default;
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  at::Tensor read(const TensorRecord& record);

 private:
  struct OpenFile { int fd; int64_t size; };
  OpenFile& open(const std::string& path);
  std::unordered_map<std::string, OpenFile> files_;
};

// Writes `header` (the full prefix: u64 length + padded JSON, made by the TS side) and then
// each tensor's bytes in order, converted to its entry in `dtypes`. Writes to `path` directly:
// atomicity (temp dir + rename) is the caller's job.
void writeSafetensors(const std::string& path, const std::string& header,
                      const std::vector<at::Tensor>& tensors, const std::vector<at::ScalarType>& dtypes);
// The same with tensor i made by tensorAt(i) just before it is written, so only one of them is in
// memory at a time (a merged LoRA checkpoint computes each merged weight there).
void writeSafetensors(const std::string& path, const std::string& header, const std::function<at::Tensor(size_t)>& tensorAt,
                      const std::vector<at::ScalarType>& dtypes);

}  // namespace octo
