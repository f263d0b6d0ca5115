#pragma once
// Ahead-of-time model preparation: import and optimize once, keep the result.
#include <memory>
#include <string>

#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/options.hpp"

namespace pyflame_rt {

// A .pfm model, or any format the ImporterRegistry recognizes (.onnx). FileNotFoundError when
// missing, InvalidModelError when neither loads.
std::shared_ptr<Graph> load_any_model(const std::string& path);

// Loads `model_path` and runs the optimizer's passes of `options.optimization_level` (the
// passes sessions run). `dynamic_batch` makes the first dimension of every input dynamic.
// With `cache_dir`, the optimized graph is kept there as a .pfm named by a hash of the model
// file's bytes and the options, and later calls load it instead of optimizing again; a cache
// file that does not load is rebuilt.
std::shared_ptr<Graph> compile_model(const std::string& model_path, const CompileOptions& options = {});

}  // namespace pyflame_rt
