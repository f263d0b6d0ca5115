#include "util/file_io.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {
namespace {

std::string errno_text() { return std::strerror(errno); }

std::string parent_dir(const std::string& path) {
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void require_file_exists(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw FileNotFoundError(path);
    if (S_ISDIR(st.st_mode)) throw InvalidModelError("'" + path + "' is a directory, not a model file");
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
    require_file_exists(path);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InvalidModelError("cannot open '" + path + "': " + errno_text());
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::shared_ptr<void> map_file(const std::string& path, size_t& size) {
    require_file_exists(path);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw InvalidModelError("cannot open '" + path + "': " + errno_text());
    struct stat st {};
    ::fstat(fd, &st);
    size = static_cast<size_t>(st.st_size);
    if (size == 0) {
        ::close(fd);
        return std::shared_ptr<void>(static_cast<void*>(nullptr), [](void*) {});
    }
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw InvalidModelError("cannot map '" + path + "': " + errno_text());
    const size_t len = size;
    return std::shared_ptr<void>(p, [len](void* q) { ::munmap(q, len); });
}

AtomicFileWriter::AtomicFileWriter(const std::string& path)
    : path_(path), tmp_path_(path + ".tmp." + std::to_string(::getpid())) {
    fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw PyFlameRTError("cannot write '" + tmp_path_ + "': " + errno_text());
}

AtomicFileWriter::~AtomicFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_path_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd_, p, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw PyFlameRTError("writing '" + tmp_path_ + "' failed: " + errno_text());
        }
        p += n;
        size -= static_cast<size_t>(n);
        written_ += static_cast<uint64_t>(n);
    }
}

void AtomicFileWriter::commit() {
    if (::fsync(fd_) != 0) throw PyFlameRTError("fsync of '" + tmp_path_ + "' failed: " + errno_text());
    ::close(fd_);
    fd_ = -1;
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0)
        throw PyFlameRTError("renaming '" + tmp_path_ + "' to '" + path_ + "' failed: " + errno_text());
    committed_ = true;
    const int dir = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        ::fsync(dir);  // makes the rename itself durable
        ::close(dir);
    }
}

}  // namespace pyflame_rt
