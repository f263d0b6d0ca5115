#include "pyflame_rt/compile.hpp"

#include <cstdio>
#include <filesystem>

#include "ops/shape_inference.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/import/importer.hpp"
#include "pyflame_rt/model_io.hpp"
#include "pyflame_rt/optimize/pass_manager.hpp"
#include "pyflame_rt/version.hpp"
#include "util/file_io.hpp"

namespace pyflame_rt {
namespace {

// FNV-1a, 64-bit: names cache files by content (not a security boundary).
uint64_t fnv1a(const uint8_t* data, size_t size, uint64_t hash = 1469598103934665603ull) {
    for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ull;
    return hash;
}

std::string cache_file_name(const std::string& model_path, const CompileOptions& options) {
    const std::vector<uint8_t> bytes = read_file_bytes(model_path);
    uint64_t hash = fnv1a(bytes.data(), bytes.size());
    const std::string salt = std::string(kVersion) + "/level=" + std::to_string(options.optimization_level) +
                             "/dynamic_batch=" + std::to_string(options.dynamic_batch);
    hash = fnv1a(reinterpret_cast<const uint8_t*>(salt.data()), salt.size(), hash);
    char name[32];
    std::snprintf(name, sizeof(name), "%016llx.pfm", static_cast<unsigned long long>(hash));
    return name;
}

}  // namespace

std::shared_ptr<Graph> load_any_model(const std::string& path) {
    require_file_exists(path);
    if (is_pfm_file(path)) return load_model(path);
    Importer* importer = ImporterRegistry::instance().get_importer(path);
    if (!importer) throw InvalidModelError("'" + path + "' is neither a .pfm model nor a format any importer recognizes");
    ImportResult result = importer->import_model(path);
    if (!result.success) throw InvalidModelError("cannot import '" + path + "': " + result.error);
    return result.graph;
}

std::shared_ptr<Graph> compile_model(const std::string& model_path, const CompileOptions& options) {
    if (options.optimization_level < 0 || options.optimization_level > 3)
        throw ValidationError("CompileOptions.optimization_level must be 0..3, got " +
                              std::to_string(options.optimization_level));
    require_file_exists(model_path);
    std::filesystem::path cached;
    if (options.cache_dir && !options.cache_dir->empty()) {
        cached = std::filesystem::path(*options.cache_dir) / cache_file_name(model_path, options);
        if (std::filesystem::exists(cached)) {
            try {
                return load_model(cached.string());
            } catch (const InvalidModelError&) {
                // A damaged cache entry: compile again and replace it.
            }
        }
    }
    std::shared_ptr<Graph> graph = load_any_model(model_path);
    if (options.dynamic_batch) {
        std::vector<TensorInfo> inputs = graph->inputs();
        for (TensorInfo& in : inputs)
            if (in.rank_known && !in.shape.empty()) in.shape[0] = std::nullopt;
        graph->set_inputs(std::move(inputs));
    }
    ops::infer_shapes(*graph);
    optimize::PassManager().run_level(*graph, options.optimization_level);
    if (!cached.empty()) {
        std::filesystem::create_directories(cached.parent_path());
        save_model(*graph, cached.string());  // atomic: a concurrent reader sees all or nothing
    }
    return graph;
}

}  // namespace pyflame_rt
