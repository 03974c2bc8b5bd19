#include "core/safetensors.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace octo {

namespace {

const std::vector<std::pair<std::string, at::ScalarType>>& dtypeTable() {
  static const std::vector<std::pair<std::string, at::ScalarType>> table = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool},
  };
  return table;
}

std::string systemError(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

}  // namespace

at::ScalarType scalarTypeFromSafetensors(const std::string& dtype) {
  for (const auto& [name, type] : dtypeTable())
    if (name == dtype) return type;
  TORCH_CHECK(false, "unsupported safetensors dtype '", dtype, "'");
}

std::string safetensorsDtypeName(at::ScalarType type) {
  for (const auto& [name, t] : dtypeTable())
    if (t == type) return name;
  TORCH_CHECK(false, "dtype ", c10::toString(type), " has no safetensors name");
}

SafetensorsReader::~SafetensorsReader() {
  for (auto& [path, file] : files_) ::close(file.fd);
}

SafetensorsReader::OpenFile& SafetensorsReader::open(const std::string& path) {
  auto it = files_.find(path);
  if (it != files_.end()) return it->second;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TORCH_CHECK(fd >= 0, systemError("cannot open", path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    TORCH_CHECK(false, systemError("cannot stat", path));
  }
  return files_.emplace(path, OpenFile{fd, static_cast<int64_t>(st.st_size)}).first->second;
}

at::Tensor SafetensorsReader::read(const TensorRecord& r) {
  OpenFile& file = open(r.file);
  // Check the record against the file before allocating: a lying shape must not allocate.
  int64_t expected = static_cast<int64_t>(c10::elementSize(r.dtype));
  for (int64_t dim : r.shape) {
    TORCH_CHECK(dim >= 0 && (dim == 0 || expected <= std::numeric_limits<int64_t>::max() / dim), r.file, ": tensor '",
                r.name, "' has an impossible shape ", at::IntArrayRef(r.shape));
    expected *= dim;
  }
  TORCH_CHECK(expected == r.byteLength, r.file, ": tensor '", r.name, "' has ", r.byteLength,
              " bytes but its shape and dtype need ", expected);
  TORCH_CHECK(r.offset >= 0 && r.offset + r.byteLength <= file.size, r.file, " is truncated: tensor '", r.name,
              "' needs bytes [", r.offset, ", ", r.offset + r.byteLength, ") but the file has ", file.size,
              " bytes. Re-download or re-save the checkpoint.");
  at::Tensor tensor = at::empty(r.shape, at::TensorOptions().dtype(r.dtype));
  auto* dst = static_cast<char*>(tensor.data_ptr());
  int64_t done = 0;
  while (done < r.byteLength) {
    const ssize_t n = ::pread(file.fd, dst + done, static_cast<size_t>(r.byteLength - done), r.offset + done);
    if (n < 0 && errno == EINTR) continue;
    TORCH_CHECK(n > 0, n == 0 ? r.file + ": unexpected end of file in tensor '" + r.name + "'"
                              : systemError("read failed in tensor '" + r.name + "' of", r.file));
    done += n;
  }
  return tensor;
}

void writeSafetensors(const std::string& path, const std::string& header,
                      const std::vector<at::Tensor>& tensors, const std::vector<at::ScalarType>& dtypes) {
  TORCH_CHECK(tensors.size() == dtypes.size(), "writeSafetensors: ", tensors.size(), " tensors but ", dtypes.size(), " dtypes");
  writeSafetensors(path, header, [&](size_t i) { return tensors[i]; }, dtypes);
}

void writeSafetensors(const std::string& path, const std::string& header, const std::function<at::Tensor(size_t)>& tensorAt,
                      const std::vector<at::ScalarType>& dtypes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TORCH_CHECK(fd >= 0, systemError("cannot create", path));
  auto writeAll = [&](const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string message = systemError("write failed", path);
        ::close(fd);
        TORCH_CHECK(false, message);
      }
      p += n;
      size -= static_cast<size_t>(n);
    }
  };
  writeAll(header.data(), header.size());
  for (size_t i = 0; i < dtypes.size(); ++i) {
    // Little-endian, row-major, contiguous: what safetensors specifies and what x86/ARM hold.
    at::Tensor bytes;
    try {
      bytes = tensorAt(i).detach().to(at::kCPU, dtypes[i]).contiguous();
    } catch (...) {
      ::close(fd);
      throw;
    }
    writeAll(bytes.data_ptr(), bytes.numel() * bytes.element_size());
  }
  const bool synced = ::fsync(fd) == 0;
  const bool closed = ::close(fd) == 0;
  TORCH_CHECK(synced && closed, systemError("cannot flush", path));
}

}  // namespace octo
