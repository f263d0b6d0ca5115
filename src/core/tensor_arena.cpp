#include "core/tensor_arena.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {
namespace {

constexpr size_t kAlignment = 64;
thread_local TensorArena* current_arena = nullptr;

}  // namespace

void* heap_buffer(size_t size) {
    constexpr size_t kHugePage = size_t{2} << 20;
    const bool huge = size >= kHugePage;
    void* p = nullptr;
    const size_t rounded = std::max(kAlignment, (size + kAlignment - 1) / kAlignment * kAlignment);
    if (posix_memalign(&p, huge ? kHugePage : kAlignment, rounded) != 0 || !p)
        throw PyFlameRTError("out of memory allocating " + std::to_string(size) + " bytes");
    // Only whole huge pages inside the buffer: a partly used one would cost RSS for nothing.
    // Advice only: without it, 4 KiB pages.
    if (huge) madvise(p, size / kHugePage * kHugePage, MADV_HUGEPAGE);
    return p;
}

TensorArena::~TensorArena() {
    for (auto& [size, buffer] : free_) std::free(buffer);
}

size_t TensorArena::size_class(size_t bytes) {
    size_t size = std::max<size_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    if (size <= 4096) return size;
    size_t power = 4096;
    while (power * 2 <= size) power *= 2;
    const size_t step = power / 8;
    return (size + step - 1) / step * step;
}

std::shared_ptr<void> TensorArena::allocate(size_t bytes) {
    const size_t wanted = size_class(bytes);
    void* buffer = nullptr;
    size_t size = wanted;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        // Best fit among the free buffers, as the plan assigned them.
        auto it = free_.lower_bound(wanted);
        if (it != free_.end()) {
            size = it->first;
            buffer = it->second;
            free_.erase(it);
            free_bytes_ -= size;
        }
    }
    if (!buffer) {
        buffer = heap_buffer(size);
        std::lock_guard<std::mutex> lock(mutex_);
        ++stats_.heap_allocations;
        stats_.reserved_bytes += size;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.in_use_bytes += size;
        stats_.peak_in_use_bytes = std::max(stats_.peak_in_use_bytes, stats_.in_use_bytes);
    }
    // The deleter keeps the arena alive: tensors may outlive the session that made them.
    return std::shared_ptr<void>(buffer, [arena = shared_from_this(), size](void* p) { arena->release(p, size); });
}

void TensorArena::release(void* buffer, size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.in_use_bytes -= size;
    // Keep free buffers up to a few times the peak ever in use (or the plan's reservation):
    // plenty for steady state, where buffers of different sizes are in use at different times,
    // and bounded when ever-new shapes keep arriving.
    if (free_bytes_ + size > std::max(4 * stats_.peak_in_use_bytes, planned_bytes_)) {
        std::free(buffer);
        stats_.reserved_bytes -= size;
        return;
    }
    free_.emplace(size, buffer);
    free_bytes_ += size;
}

std::vector<size_t> TensorArena::plan(const std::vector<std::pair<size_t, bool>>& events) {
    std::multimap<size_t, size_t> free;  // size -> buffer index
    std::vector<size_t> buffers;         // sizes
    std::vector<size_t> held;            // buffer per allocation, in order
    for (const auto& [bytes_or_index, is_allocation] : events) {
        if (is_allocation) {
            // Best fit among the free buffers; else the largest free one grows to the size
            // (the buffers' sizes are still being decided); a new buffer only when none is free.
            // So there are as many buffers as tensors alive at once, each as big as the
            // biggest tensor it holds.
            const size_t wanted = size_class(bytes_or_index);
            auto it = free.lower_bound(wanted);
            if (it == free.end() && !free.empty()) {
                it = std::prev(free.end());
                buffers[it->second] = wanted;
            }
            if (it != free.end()) {
                held.push_back(it->second);
                free.erase(it);
            } else {
                held.push_back(buffers.size());
                buffers.push_back(wanted);
            }
        } else {
            const size_t buffer = held.at(bytes_or_index);
            free.emplace(buffers[buffer], buffer);
        }
    }
    return buffers;
}

void TensorArena::reserve(const std::vector<size_t>& sizes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t size : sizes) {
        free_.emplace(size, heap_buffer(size));
        free_bytes_ += size;
        planned_bytes_ += size;
        stats_.reserved_bytes += size;
        ++stats_.heap_allocations;
    }
}

TensorArena::Stats TensorArena::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

TensorArena* TensorArena::current() { return current_arena; }

TensorArena::Scope::Scope(TensorArena* arena) : previous_(current_arena), installed_(arena != nullptr) {
    if (installed_) current_arena = arena;
}

TensorArena::Scope::~Scope() {
    if (installed_) current_arena = previous_;
}

}  // namespace pyflame_rt
