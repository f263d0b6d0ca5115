#include "pyflame_rt/session.hpp"

#include <algorithm>
#include <atomic>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/execution_plan.hpp"
#include "pyflame_rt/compile.hpp"
#include "ops/shape_inference.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/import/importer.hpp"
#include "pyflame_rt/model_io.hpp"
#include "pyflame_rt/optimize/pass_manager.hpp"
#include "session/profiler.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"

namespace pyflame_rt {
namespace {

std::string join(const std::vector<std::string>& items, const std::string& sep = "; ") {
    std::string out;
    for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
    return out;
}

}  // namespace

struct InferenceSession::Impl {
    SessionOptions options;
    std::shared_ptr<Graph> graph;
    std::unique_ptr<CpuBackend> backend;
    std::unique_ptr<ExecutionPlan> plan;
    quantization::QuantizationReport quant_report;
    std::shared_ptr<TensorArena> arena = TensorArena::create();
    int64_t weights_bytes = 0;
    std::vector<NodeArg> inputs, outputs;
    std::vector<bool> input_has_default;
    std::unordered_map<std::string, size_t> input_index, output_index;
    std::unique_ptr<Profiler> profiler;
    LogLevel log_level = LogLevel::Warning;

    void build(std::shared_ptr<Graph> g, std::vector<std::string> providers);
    void check_feeds(const std::unordered_map<std::string, Value>& feed, std::vector<Value>& ordered) const;
};

void InferenceSession::Impl::build(std::shared_ptr<Graph> g, std::vector<std::string> providers) {
    const auto problems = options.validate();
    if (!problems.empty()) throw ValidationError("invalid SessionOptions: " + join(problems));
    log_level = parse_log_level(options.log_level);
    if (!g) throw ValidationError("InferenceSession: null graph");

    // Providers: the first one listed decides (only the CPU exists in this build).
    if (providers.empty()) providers.push_back(options.device);
    backend.reset();
    for (const auto& p : providers) {
        auto b = create_backend(p, options);  // raises for wse / unknown providers
        if (!backend) backend.reset(static_cast<CpuBackend*>(b.release()));
    }

    const auto graph_problems = g->validate();
    if (!graph_problems.empty())
        throw InvalidModelError("graph '" + g->name() + "' is invalid: " + join(graph_problems));

    // The session owns a copy it may annotate (inferred shapes); tensors are shared, not copied.
    graph = std::make_shared<Graph>(*g);
    g.reset();  // the copy shares its tensors: the caller's references are the only others
    quant_report = quantization::quantization_report_of(*graph);  // before fusions rename the quantized ops
    for (const auto& w : ops::infer_shapes(*graph)) log_message(log_level, LogLevel::Info, w);
    for (const auto& r : optimize::PassManager().run_level(*graph, options.optimization_level))
        if (r.changed())
            log_message(log_level, LogLevel::Info,
                        r.pass + ": " + std::to_string(r.nodes_removed) + " nodes removed, " +
                            std::to_string(r.nodes_fused) + " fused");

    // Fusions made new values: annotate them too (the memory plan sizes buffers from these).
    if (options.optimization_level > 0) ops::infer_shapes(*graph);

    for (const auto& [name, t] : graph->initializers()) weights_bytes += static_cast<int64_t>(t.size_bytes());
    if (options.memory_limit > 0 && weights_bytes > options.memory_limit)
        throw ValidationError("model weights alone need " + std::to_string(weights_bytes) +
                              " bytes, over memory_limit " + std::to_string(options.memory_limit));
    // The memory plan reserves its buffers now; over the limit, nothing is reserved for long:
    // the arena (and the plan) die with this exception.
    // Weights the kernels pack at creation are kept in that form only: the plan reads them through
    // the graph, and each row-major copy is freed as soon as it is packed (unless the caller's
    // graph shares it), so the weights are never in memory twice.
    plan = std::make_unique<ExecutionPlan>(
        *graph, *backend, backend->num_threads(), graph->opset_version(""), arena, options.execution_mode == "parallel",
        [this](const std::string& name, const Tensor& packed) { graph->add_initializer(name, packed); });
    const int64_t planned = static_cast<int64_t>(plan->planned_bytes());
    if (options.memory_limit > 0 && weights_bytes + planned > options.memory_limit)
        throw ValidationError("the memory plan needs " + std::to_string(weights_bytes + planned) + " bytes (weights " +
                              std::to_string(weights_bytes) + ", intermediate tensors " + std::to_string(planned) +
                              "), over memory_limit " + std::to_string(options.memory_limit));

    for (size_t i = 0; i < graph->inputs().size(); ++i) {
        const auto& in = graph->inputs()[i];
        inputs.push_back(NodeArg{in.name, in.dtype, in.shape, in.rank_known, in.kind});
        input_has_default.push_back(graph->has_initializer(in.name));
        input_index[in.name] = i;
    }
    for (size_t i = 0; i < graph->outputs().size(); ++i) {
        const auto& out = graph->outputs()[i];
        outputs.push_back(NodeArg{out.name, out.dtype, out.shape, out.rank_known, out.kind});
        output_index[out.name] = i;
    }
    if (options.enable_profiling) profiler = std::make_unique<Profiler>();
    log_message(log_level, LogLevel::Info,
                "session ready: " + std::to_string(plan->num_nodes()) + " nodes on " + backend->name());
}

namespace {

bool is_optional(ValueKind kind) { return kind == ValueKind::OptionalTensor || kind == ValueKind::OptionalSequence; }
bool is_sequence(ValueKind kind) { return kind == ValueKind::Sequence || kind == ValueKind::OptionalSequence; }

void check_tensor(const NodeArg& expected, const Tensor& tensor, const std::string& what) {
    if (tensor.dtype() != expected.dtype)
        throw ValidationError(what + ": expected dtype " + dtype_to_string(expected.dtype) + ", got " +
                              dtype_to_string(tensor.dtype()));
    bool shape_ok = !expected.rank_known || expected.shape.size() == tensor.ndim();
    for (size_t d = 0; shape_ok && d < expected.shape.size(); ++d)
        shape_ok = !expected.shape[d] || *expected.shape[d] == tensor.shape()[d];
    // Sequence elements may differ in shape; only their dtype is checked.
    if (!shape_ok && !is_sequence(expected.kind))
        throw ValidationError(what + ": expected shape " + shape_to_string(expected.shape) + ", got " +
                              shape_to_string(tensor.shape()));
    if (tensor.empty() && tensor.num_elements() > 0) throw ValidationError(what + " has no data");
}

}  // namespace

void InferenceSession::Impl::check_feeds(const std::unordered_map<std::string, Value>& feed,
                                         std::vector<Value>& ordered) const {
    ordered.assign(inputs.size(), Value());
    std::vector<bool> given(inputs.size(), false);
    for (const auto& [name, value] : feed) {
        auto it = input_index.find(name);
        if (it == input_index.end()) {
            std::vector<std::string> names;
            for (const auto& in : inputs) names.push_back(in.name);
            throw ValidationError("unknown input '" + name + "'; the model's inputs are: " + join(names, ", "));
        }
        const NodeArg& expected = inputs[it->second];
        const std::string what = "input '" + name + "'";
        if (value.is_none()) {
            if (!is_optional(expected.kind)) throw ValidationError(what + " is None but is not optional");
        } else if (value.is_sequence() != is_sequence(expected.kind)) {
            throw ValidationError(what + ": expected a " + expected.type_str() + ", got a " + value.kind_name());
        } else if (value.is_sequence()) {
            for (size_t k = 0; k < value.items().size(); ++k)
                check_tensor(expected, value.items()[k], what + " element " + std::to_string(k));
        } else {
            check_tensor(expected, value.tensor(), what);
        }
        ordered[it->second] = value;
        given[it->second] = true;
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
        if (!given[i] && !input_has_default[i] && !is_optional(inputs[i].kind))
            throw ValidationError("missing input '" + inputs[i].name + "' (expected " + dtype_to_string(inputs[i].dtype) +
                                  " " + shape_to_string(inputs[i].shape) + ")");
    }
}

InferenceSession::InferenceSession(const std::string& model_path, SessionOptions options,
                                   std::vector<std::string> providers)
    : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    const auto problems = impl_->options.validate();  // before touching the file
    if (!problems.empty()) throw ValidationError("invalid SessionOptions: " + join(problems));
    impl_->build(load_any_model(model_path), std::move(providers));
}

InferenceSession::InferenceSession(std::shared_ptr<Graph> graph, SessionOptions options,
                                   std::vector<std::string> providers)
    : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    impl_->build(std::move(graph), std::move(providers));
}

InferenceSession::~InferenceSession() = default;

std::vector<Tensor> InferenceSession::run(const std::vector<std::string>& output_names,
                                          const std::unordered_map<std::string, Tensor>& input_feed,
                                          const RunOptions& run_options) {
    std::unordered_map<std::string, Value> values(input_feed.begin(), input_feed.end());
    std::vector<Tensor> outputs;
    const auto results = run_values(output_names, values, run_options);
    for (size_t i = 0; i < results.size(); ++i) {
        if (!results[i].is_tensor())
            throw ValidationError("output " + std::to_string(i) + " is a " + results[i].kind_name() +
                                  ", not a tensor: use run_values()");
        outputs.push_back(results[i].tensor());
    }
    return outputs;
}

std::vector<Value> InferenceSession::run_values(const std::vector<std::string>& output_names,
                                                const std::unordered_map<std::string, Value>& input_feed,
                                                const RunOptions& run_options) {
    const Impl& s = *impl_;
    if (run_options.log_level && !is_valid_log_level(*run_options.log_level))
        throw ValidationError("RunOptions.log_level: unknown level '" + *run_options.log_level + "'");
    if (run_options.timeout_ms && *run_options.timeout_ms < 0)
        throw ValidationError("RunOptions.timeout_ms must be >= 0, got " + std::to_string(*run_options.timeout_ms));

    std::vector<size_t> wanted;
    if (output_names.empty()) {
        for (size_t i = 0; i < s.outputs.size(); ++i) wanted.push_back(i);
    } else {
        for (const auto& name : output_names) {
            auto it = s.output_index.find(name);
            if (it == s.output_index.end()) {
                std::vector<std::string> names;
                for (const auto& o : s.outputs) names.push_back(o.name);
                throw ValidationError("unknown output '" + name + "'; the model's outputs are: " + join(names, ", "));
            }
            wanted.push_back(it->second);
        }
    }
    std::vector<Value> feeds;
    s.check_feeds(input_feed, feeds);

    ops::RunControl control;
    const auto start = std::chrono::steady_clock::now();
    if (run_options.timeout_ms) {
        control.timeout_ms = *run_options.timeout_ms;
        control.deadline = start + std::chrono::milliseconds(*run_options.timeout_ms);
    }
    Profiler* profiler = s.profiler && s.profiler->active() ? s.profiler.get() : nullptr;
    const std::string tag = run_options.tag.value_or("");
    if (profiler) {
        control.on_node = [profiler, &tag](const Node& node, auto t0, auto t1) {
            profiler->record(node.name(), "node", t0, t1, {{"op_type", node.op_type()}, {"tag", tag}});
        };
    }
    const LogLevel level = run_options.log_level ? parse_log_level(*run_options.log_level) : s.log_level;
    log_message(level, LogLevel::Verbose, "run" + (tag.empty() ? std::string() : " [" + tag + "]"));

    auto results = s.plan->run(std::move(feeds), wanted, control);
    for (size_t i = 0; i < results.size(); ++i) {
        const NodeArg& out = s.outputs[wanted[i]];
        if (results[i].is_none() && !is_optional(out.kind))
            throw ValidationError("graph output '" + out.name + "' was not computed");
    }
    if (profiler) profiler->record(tag.empty() ? "run" : "run [" + tag + "]", "session", start,
                                   std::chrono::steady_clock::now(), {{"tag", tag}});
    return results;
}

std::vector<NodeArg> InferenceSession::get_inputs() const { return impl_->inputs; }
std::vector<NodeArg> InferenceSession::get_outputs() const { return impl_->outputs; }
ModelMetadata InferenceSession::get_modelmeta() const { return impl_->graph->metadata(); }
std::vector<std::string> InferenceSession::get_providers() const { return {impl_->backend->name()}; }
const SessionOptions& InferenceSession::options() const { return impl_->options; }
std::shared_ptr<const Graph> InferenceSession::graph() const { return impl_->graph; }
quantization::QuantizationReport InferenceSession::quantization_report() const { return impl_->quant_report; }

SessionMemoryStats InferenceSession::memory_stats() const {
    const TensorArena::Stats a = impl_->arena->stats();
    SessionMemoryStats s;
    s.weights_bytes = impl_->weights_bytes;
    s.planned_bytes = static_cast<int64_t>(impl_->plan->planned_bytes());
    s.arena_bytes = static_cast<int64_t>(a.reserved_bytes);
    s.peak_in_use_bytes = static_cast<int64_t>(a.peak_in_use_bytes);
    s.heap_allocations = static_cast<int64_t>(a.heap_allocations);
    return s;
}

int64_t InferenceSession::get_profiling_start_time_ns() const {
    return impl_->profiler ? impl_->profiler->start_time_ns() : 0;
}

std::string InferenceSession::end_profiling() {
    if (!impl_->profiler) throw ValidationError("end_profiling: profiling is not enabled (SessionOptions.enable_profiling)");
    return impl_->profiler->finish(impl_->options.profile_file_prefix);
}

}  // namespace pyflame_rt
