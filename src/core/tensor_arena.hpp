#pragma once
// TensorArena: the buffers of a session's tensors, reused run after run.
//
// ExecutionPlan reserves, at session creation, the buffers its memory plan needs (from tensor
// lifetimes and inferred shapes: as many buffers as tensors alive at once, each as big as the
// biggest tensor it holds) and
// installs the arena on the thread that runs the graph. Tensor allocations on that thread then
// take the best-fitting free buffer and give it back when their last reference dies, so
// steady-state runs allocate nothing from the heap (stats().heap_allocations stops growing).
// Views and kernels' own temporaries need no planning for correctness: a buffer returns to the
// arena only when nothing references it.
//
// Thread-safe: concurrent runs share the arena, and tensors handed to the caller keep it alive.
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace pyflame_rt {

// Heap memory for tensors, 64-byte aligned, freed with std::free (throws PyFlameRTError when
// there is none). Buffers of 2 MiB or more are 2 MiB-aligned and advised to use transparent huge
// pages: kernels streaming them then cross no 4 KiB page boundary, where hardware prefetchers
// stop, and miss the TLB far less.
void* heap_buffer(size_t size);

class TensorArena : public std::enable_shared_from_this<TensorArena> {
public:
    struct Stats {
        size_t heap_allocations = 0;  // buffers ever taken from the heap
        size_t reserved_bytes = 0;    // buffers owned now (in use + free)
        size_t in_use_bytes = 0;
        size_t peak_in_use_bytes = 0;
    };

    static std::shared_ptr<TensorArena> create() { return std::shared_ptr<TensorArena>(new TensorArena()); }
    ~TensorArena();

    // The buffer size serving a request of `bytes`: a multiple of 64, and above 4 KiB rounded up
    // to an eighth of a power of two (at most 12.5% slack), so nearby sizes share buffers.
    static size_t size_class(size_t bytes);

    std::shared_ptr<void> allocate(size_t bytes);
    // The buffers a sequence of allocations and releases needs under allocate()'s best-fit
    // policy, a free buffer growing for a bigger tensor rather than adding one.
    // `events`: (bytes, true) allocates; (i, false) releases the i-th allocation.
    static std::vector<size_t> plan(const std::vector<std::pair<size_t, bool>>& events);
    // Adds free buffers of these sizes (a plan's).
    void reserve(const std::vector<size_t>& sizes);
    Stats stats() const;

    // The arena this thread's tensor allocations come from (nullptr: the heap).
    static TensorArena* current();
    // Installs `arena` on this thread for the scope's life; a null arena leaves things as they are.
    class Scope {
    public:
        explicit Scope(TensorArena* arena);
        ~Scope();
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;

    private:
        TensorArena* previous_;
        bool installed_;
    };

private:
    TensorArena() = default;
    void release(void* buffer, size_t size);

    mutable std::mutex mutex_;
    std::multimap<size_t, void*> free_;  // by size
    size_t free_bytes_ = 0;
    size_t planned_bytes_ = 0;  // reserved by the memory plan
    Stats stats_;
};

}  // namespace pyflame_rt
