#pragma once
// Small file helpers shared by the model writers and readers.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pyflame_rt {

// Throws pyflame_rt::FileNotFoundError when `path` does not exist.
void require_file_exists(const std::string& path);
std::vector<uint8_t> read_file_bytes(const std::string& path);
// Maps `path` read-only; the returned pointer keeps the mapping alive. `size` receives its length.
std::shared_ptr<void> map_file(const std::string& path, size_t& size);

// Writes `path` atomically: chunks go to a temporary file in the same folder, which is
// fsynced and renamed over `path`, then the folder is fsynced. A crash leaves the old file.
class AtomicFileWriter {
public:
    explicit AtomicFileWriter(const std::string& path);
    ~AtomicFileWriter();  // removes the temporary file unless commit() succeeded
    void write(const void* data, size_t size);
    uint64_t bytes_written() const { return written_; }
    void commit();

private:
    std::string path_, tmp_path_;
    int fd_ = -1;
    uint64_t written_ = 0;
    bool committed_ = false;
};

}  // namespace pyflame_rt
