// ai.onnx.ml operators: ArrayFeatureExtractor, Binarizer, LabelEncoder (opset 1 classes_*
// form, opset 2 keys_*/values_* lists and opset 4 tensor attributes) and TreeEnsemble (opset 5).
#include <algorithm>
#include <cmath>
#include <map>
#include <variant>

#include "ops/dispatch.hpp"
#include "ops/nn_common.hpp"
#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

const char* const kMl = "ai.onnx.ml";

// ---------------------------------------------------------------------------------------------
// ArrayFeatureExtractor: X[..., indices] (a 1-D X gives [1, len(indices)], as ONNX Runtime).

class ArrayFeatureExtractorKernel final : public NodeKernel {
public:
    explicit ArrayFeatureExtractorKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& y = ctx.input(1);
        require_dtype(node_, y, DType::Int64, "indices Y");
        if (x.ndim() == 0) fail("X must have rank >= 1");
        const int64_t last = x.shape().back(), rows = x.num_elements() / std::max<int64_t>(last, 1);
        const int64_t* idx = y.data_ptr<int64_t>();
        const int64_t n = y.num_elements();
        for (int64_t i = 0; i < n; ++i)
            if (idx[i] < 0 || idx[i] >= last)
                fail("index " + std::to_string(idx[i]) + " is out of range for the last dimension " + std::to_string(last));
        std::vector<int64_t> shape = x.ndim() == 1 ? std::vector<int64_t>{1} : std::vector<int64_t>(x.shape().begin(), x.shape().end() - 1);
        shape.push_back(n);
        Tensor out(shape, x.dtype());
        dispatch_by_width(x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* src = x.data_ptr<T>();
            T* dst = out.data_ptr<T>();
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t i = 0; i < n; ++i) dst[r * n + i] = src[r * last + idx[i]];
        });
        ctx.outputs[0] = std::move(out);
    }
};

void infer_array_feature_extractor(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const Shape& x = ctx.input(0).shape;
    Shape out = x.size() <= 1 ? Shape{1} : Shape(x.begin(), x.end() - 1);
    std::optional<int64_t> n;
    if (ctx.has_input(1)) {
        n = 1;
        for (const auto& d : ctx.input(1).shape) n = n && d ? std::optional<int64_t>(*n * *d) : std::nullopt;
    }
    out.push_back(n);
    ctx.set_output(0, ctx.input(0).dtype, out);
}

// ---------------------------------------------------------------------------------------------
// Binarizer: 1 where X > threshold, else 0.

class BinarizerKernel final : public NodeKernel {
public:
    explicit BinarizerKernel(const Node& node) : NodeKernel(node), threshold_(node.get_attribute<double>("threshold", 0.0)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        Tensor y(x.shape(), x.dtype());
        dispatch_numeric(x.dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            // The threshold is a float attribute: compare in the input's type, like ONNX Runtime.
            const T t = static_cast<T>(threshold_);
            for (int64_t i = 0; i < x.num_elements(); ++i) yd[i] = xd[i] > t ? T(1) : T(0);
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    double threshold_;
};

// ---------------------------------------------------------------------------------------------
// LabelEncoder

// One key or value: integers (int16/32/64), floats (float/double) or strings.
using Label = std::variant<int64_t, double, std::string>;

enum class LabelKind { Int, Float, String };

LabelKind kind_of(DType dt, const Node& node) {
    switch (dt) {
        case DType::Int16: case DType::Int32: case DType::Int64: return LabelKind::Int;
        case DType::Float32: case DType::Float64: return LabelKind::Float;
        case DType::String: return LabelKind::String;
        default: fail_node(node, "dtype " + dtype_to_string(dt) + " is not a LabelEncoder type");
    }
}

std::vector<Label> labels_of(const Tensor& t, const Node& node) {
    std::vector<Label> out;
    if (t.dtype() == DType::String) {
        for (int64_t i = 0; i < t.num_elements(); ++i) out.emplace_back(t.data_ptr<std::string>()[i]);
    } else if (kind_of(t.dtype(), node) == LabelKind::Int) {
        dispatch_numeric(t.dtype(), node, [&](auto tag) {  // int16/32/64 (not through double: int64 would round)
            using T = decltype(tag);
            if constexpr (std::is_integral_v<T>)
                for (int64_t i = 0; i < t.num_elements(); ++i) out.emplace_back(static_cast<int64_t>(t.data_ptr<T>()[i]));
        });
    } else {
        for (double v : float_values(t, node)) out.emplace_back(v);
    }
    return out;
}

// Orders labels with every NaN equal (NaN keys match any NaN input).
struct LabelLess {
    bool operator()(const Label& a, const Label& b) const {
        if (a.index() != b.index()) return a.index() < b.index();
        if (const double* x = std::get_if<double>(&a)) {
            const double y = std::get<double>(b);
            if (std::isnan(*x) || std::isnan(y)) return !std::isnan(*x) && std::isnan(y);
            return *x < y;
        }
        return a < b;
    }
};

class LabelEncoderKernel final : public NodeKernel {
public:
    explicit LabelEncoderKernel(const Node& node) : NodeKernel(node) {
        std::vector<Label> keys, values;
        if (node.has_attribute("classes_strings")) {  // opset 1: string <-> index in classes_strings
            const auto classes = node.get_attribute<std::vector<std::string>>("classes_strings");
            classes_ = true;
            for (size_t i = 0; i < classes.size(); ++i) {
                keys.emplace_back(classes[i]);
                values.emplace_back(static_cast<int64_t>(i));
            }
            default_int_ = node.get_attribute<int64_t>("default_int64", -1);
            default_string_ = node.get_attribute<std::string>("default_string", "_Unused");
            for (size_t i = 0; i < keys.size(); ++i) {
                forward_.emplace(keys[i], values[i]);
                backward_.emplace(values[i], keys[i]);
            }
            return;
        }
        key_dtype_ = read_side(node, "keys", keys);
        value_dtype_ = read_side(node, "values", values);
        if (keys.size() != values.size())
            fail("keys (" + std::to_string(keys.size()) + ") and values (" + std::to_string(values.size()) + ") differ in length");
        for (size_t i = 0; i < keys.size(); ++i) forward_.insert_or_assign(keys[i], values[i]);  // the last repeat wins
        if (node.has_attribute("default_tensor")) {
            const Tensor d = node.get_attribute<Tensor>("default_tensor");
            if (d.num_elements() != 1 || d.dtype() != value_dtype_) fail("default_tensor must hold one value of the values' type");
            default_ = labels_of(d, node_)[0];
        } else if (value_dtype_ == DType::String) {
            default_ = node.get_attribute<std::string>("default_string", "_Unused");
        } else if (value_dtype_ == DType::Int64) {
            default_ = node.get_attribute<int64_t>("default_int64", -1);
        } else {
            default_ = node.get_attribute<double>("default_float", -0.0);
        }
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (classes_) {
            const bool to_int = x.dtype() == DType::String;
            if (!to_int && x.dtype() != DType::Int64) fail("X must be String or Int64");
            const std::vector<Label> in = labels_of(x, node_);
            Tensor y(x.shape(), to_int ? DType::Int64 : DType::String);
            const auto& map = to_int ? forward_ : backward_;
            for (size_t i = 0; i < in.size(); ++i) {
                auto it = map.find(in[i]);
                if (to_int) y.data_ptr<int64_t>()[i] = it == map.end() ? default_int_ : std::get<int64_t>(it->second);
                else y.data_ptr<std::string>()[i] = it == map.end() ? default_string_ : std::get<std::string>(it->second);
            }
            ctx.outputs[0] = std::move(y);
            return;
        }
        if (kind_of(x.dtype(), node_) != kind_of(key_dtype_, node_))
            fail("X is " + dtype_to_string(x.dtype()) + " but the keys are " + dtype_to_string(key_dtype_));
        const std::vector<Label> in = labels_of(x, node_);
        Tensor y(x.shape(), value_dtype_);
        for (size_t i = 0; i < in.size(); ++i) {
            auto it = forward_.find(in[i]);
            const Label& v = it == forward_.end() ? default_ : it->second;
            switch (value_dtype_) {
                case DType::String: y.data_ptr<std::string>()[i] = std::get<std::string>(v); break;
                case DType::Int64: y.data_ptr<int64_t>()[i] = std::get<int64_t>(v); break;
                case DType::Int32: y.data_ptr<int32_t>()[i] = static_cast<int32_t>(std::get<int64_t>(v)); break;
                case DType::Int16: y.data_ptr<int16_t>()[i] = static_cast<int16_t>(std::get<int64_t>(v)); break;
                case DType::Float64: y.data_ptr<double>()[i] = std::get<double>(v); break;
                default: y.data_ptr<float>()[i] = static_cast<float>(std::get<double>(v)); break;
            }
        }
        ctx.outputs[0] = std::move(y);
    }

    // The dtype of the keys_* or values_* side given (exactly one form must be present).
    static DType read_side(const Node& node, const std::string& side, std::vector<Label>& out) {
        int given = 0;
        DType dt = DType::Float32;
        if (node.has_attribute(side + "_strings")) {
            ++given, dt = DType::String;
            for (auto& s : node.get_attribute<std::vector<std::string>>(side + "_strings")) out.emplace_back(s);
        }
        if (node.has_attribute(side + "_int64s")) {
            ++given, dt = DType::Int64;
            for (int64_t v : node.get_attribute<std::vector<int64_t>>(side + "_int64s")) out.emplace_back(v);
        }
        if (node.has_attribute(side + "_floats")) {
            ++given, dt = DType::Float32;
            for (double v : node.get_attribute<std::vector<double>>(side + "_floats")) out.emplace_back(v);
        }
        if (node.has_attribute(side + "_tensor")) {
            ++given;
            const Tensor t = node.get_attribute<Tensor>(side + "_tensor");
            dt = t.dtype();
            kind_of(dt, node);
            out = labels_of(t, node);
        }
        if (given != 1) fail_node(node, "exactly one " + side + "_* attribute must be given; found " + std::to_string(given));
        return dt;
    }

private:
    bool classes_ = false;
    DType key_dtype_ = DType::String, value_dtype_ = DType::Int64;
    std::map<Label, Label, LabelLess> forward_, backward_;
    Label default_;
    int64_t default_int_ = -1;
    std::string default_string_;
};

void infer_label_encoder(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (ctx.node.has_attribute("classes_strings")) {
        ctx.set_output(0, x.dtype == DType::String ? DType::Int64 : DType::String, x.shape);
        return;
    }
    std::vector<Label> ignored;
    ctx.set_output(0, LabelEncoderKernel::read_side(ctx.node, "values", ignored), x.shape);
}

// ---------------------------------------------------------------------------------------------
// TreeEnsemble (ai.onnx.ml opset 5)

enum class Aggregate { Average = 0, Sum = 1, Min = 2, Max = 3 };
enum class PostTransform { None = 0, Softmax = 1, Logistic = 2, SoftmaxZero = 3, Probit = 4 };

// Inverse of the standard normal CDF via erf^-1 (Giles' single-precision approximation, refined
// by two Newton steps on erf).
double probit(double p) {
    const double x = 2 * p - 1;
    double w = -std::log((1.0 - x) * (1.0 + x)), r;
    if (w < 5.0) {
        w -= 2.5;
        r = 2.81022636e-08;
        for (double c : {3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164,
                         0.246640727, 1.50140941})
            r = r * w + c;
    } else {
        w = std::sqrt(w) - 3.0;
        r = -0.000200214257;
        for (double c : {0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047,
                         1.00167406, 2.83297682})
            r = r * w + c;
    }
    double y = r * x;
    for (int i = 0; i < 2 && std::isfinite(y); ++i)
        y -= (std::erf(y) - x) / (2.0 / std::sqrt(3.141592653589793) * std::exp(-y * y));
    return std::sqrt(2.0) * y;
}

class TreeEnsembleKernel final : public NodeKernel {
public:
    explicit TreeEnsembleKernel(const Node& node) : NodeKernel(node) {
        auto ints = [&](const char* name) { return node.get_attribute<std::vector<int64_t>>(name); };
        auto tensor_doubles = [&](const char* name) { return float_values(node.get_attribute<Tensor>(name), node); };
        features_ = ints("nodes_featureids");
        true_ids_ = ints("nodes_truenodeids");
        false_ids_ = ints("nodes_falsenodeids");
        true_leaf_ = ints("nodes_trueleafs");
        false_leaf_ = ints("nodes_falseleafs");
        leaf_targets_ = ints("leaf_targetids");
        roots_ = ints("tree_roots");
        splits_ = tensor_doubles("nodes_splits");
        leaf_weights_ = tensor_doubles("leaf_weights");
        const Tensor modes = node.get_attribute<Tensor>("nodes_modes");
        if (modes.dtype() != DType::UInt8) fail("nodes_modes must be a uint8 tensor");
        modes_.assign(modes.data_ptr<uint8_t>(), modes.data_ptr<uint8_t>() + modes.num_elements());
        missing_true_ = node.get_attribute<std::vector<int64_t>>("nodes_missing_value_tracks_true", {});
        targets_ = node.get_attribute<int64_t>("n_targets");
        aggregate_ = static_cast<Aggregate>(node.get_attribute<int64_t>("aggregate_function", 1));
        post_ = static_cast<PostTransform>(node.get_attribute<int64_t>("post_transform", 0));
        const size_t n = features_.size();
        if (true_ids_.size() != n || false_ids_.size() != n || true_leaf_.size() != n || false_leaf_.size() != n ||
            splits_.size() != n || modes_.size() != n || (!missing_true_.empty() && missing_true_.size() != n))
            fail("the nodes_* attributes must all have the same length");
        if (leaf_targets_.size() != leaf_weights_.size()) fail("leaf_targetids and leaf_weights differ in length");
        if (targets_ < 1) fail("n_targets must be positive");
        if (static_cast<int64_t>(aggregate_) < 0 || static_cast<int64_t>(aggregate_) > 3) fail("aggregate_function must be 0..3");
        if (static_cast<int64_t>(post_) < 0 || static_cast<int64_t>(post_) > 4) fail("post_transform must be 0..4");
        for (size_t i = 0; i < n; ++i) {
            if (modes_[i] < 0 || modes_[i] > 6) fail("nodes_modes[" + std::to_string(i) + "] is not 0..6");
            if (features_[i] < 0) fail("nodes_featureids must be >= 0");
            for (int side = 0; side < 2; ++side) {
                const int64_t id = side ? false_ids_[i] : true_ids_[i];
                const bool leaf = (side ? false_leaf_[i] : true_leaf_[i]) != 0;
                if (id < 0 || id >= static_cast<int64_t>(leaf ? leaf_weights_.size() : n))
                    fail("node " + std::to_string(i) + " branches to " + (leaf ? "leaf " : "node ") + std::to_string(id) + ", out of range");
            }
        }
        for (int64_t t : leaf_targets_)
            if (t < 0 || t >= targets_) fail("leaf_targetids must be in [0, n_targets)");
        for (int64_t r : roots_)
            if (r < 0 || r >= static_cast<int64_t>(n)) fail("tree_roots must index nodes_*");
        // Set members for the BRANCH_MEMBER nodes, in order, NaN-delimited.
        members_.resize(n);
        const std::vector<double> values = node.has_attribute("membership_values") ? tensor_doubles("membership_values") : std::vector<double>();
        size_t pos = 0;
        for (size_t i = 0; i < n; ++i) {
            if (modes_[i] != 6) continue;
            if (pos >= values.size()) fail("membership_values has no set for member node " + std::to_string(i));
            for (; pos < values.size() && !std::isnan(values[pos]); ++pos) members_[i].push_back(values[pos]);
            ++pos;  // the NaN delimiter
        }
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() != 2) fail("X has shape " + shape_to_string(x.shape()) + "; expected [N, F]");
        const int64_t rows = x.shape()[0], cols = x.shape()[1];
        for (int64_t f : features_)
            if (f >= cols) fail("a node reads feature " + std::to_string(f) + " but X has " + std::to_string(cols));
        const std::vector<double> xv = float_values(x, node_);
        const double init = aggregate_ == Aggregate::Min ? std::numeric_limits<double>::max()
                            : aggregate_ == Aggregate::Max ? std::numeric_limits<double>::lowest() : 0.0;
        std::vector<double> out(static_cast<size_t>(rows * targets_), init);
        for (int64_t r = 0; r < rows; ++r) {
            double* o = out.data() + r * targets_;
            for (int64_t root : roots_) {
                const int64_t leaf = find_leaf(xv.data() + r * cols, root);
                double& slot = o[leaf_targets_[leaf]];
                const double w = leaf_weights_[leaf];
                switch (aggregate_) {
                    case Aggregate::Sum: slot += w; break;
                    case Aggregate::Average: slot += w / static_cast<double>(roots_.size()); break;
                    case Aggregate::Min: slot = std::min(slot, w); break;
                    case Aggregate::Max: slot = std::max(slot, w); break;
                }
            }
            post_transform(o);
        }
        ctx.outputs[0] = float_tensor({rows, targets_}, x.dtype(), out, node_);
    }

private:
    int64_t find_leaf(const double* row, int64_t node) const {
        // A well-formed tree reaches a leaf in fewer steps than it has nodes; more means a cycle.
        for (size_t steps = 0; steps <= features_.size(); ++steps) {
            const double v = row[features_[node]];
            bool go_true;
            if (std::isnan(v) && !missing_true_.empty() && missing_true_[node]) {
                go_true = true;
            } else {
                const double s = splits_[node];
                switch (modes_[node]) {
                    case 0: go_true = v <= s; break;
                    case 1: go_true = v < s; break;
                    case 2: go_true = v >= s; break;
                    case 3: go_true = v > s; break;
                    case 4: go_true = v == s; break;
                    case 5: go_true = v != s; break;
                    default: go_true = std::find(members_[node].begin(), members_[node].end(), v) != members_[node].end();
                }
            }
            const int64_t next = go_true ? true_ids_[node] : false_ids_[node];
            if (go_true ? true_leaf_[node] : false_leaf_[node]) return next;
            node = next;
        }
        fail("the tree at node " + std::to_string(node) + " has a cycle");
    }

    void post_transform(double* o) const {
        switch (post_) {
            case PostTransform::None: return;
            case PostTransform::Logistic:
                for (int64_t t = 0; t < targets_; ++t) o[t] = 1.0 / (1.0 + std::exp(-o[t]));
                return;
            case PostTransform::Probit:
                for (int64_t t = 0; t < targets_; ++t) o[t] = probit(o[t]);
                return;
            case PostTransform::Softmax:
            case PostTransform::SoftmaxZero: {
                // SOFTMAX_ZERO leaves exact zeros at zero and normalizes the rest.
                const bool skip_zero = post_ == PostTransform::SoftmaxZero;
                double top = std::numeric_limits<double>::lowest(), sum = 0;
                for (int64_t t = 0; t < targets_; ++t)
                    if (!skip_zero || o[t] != 0) top = std::max(top, o[t]);
                for (int64_t t = 0; t < targets_; ++t) {
                    o[t] = skip_zero && o[t] == 0 ? 0.0 : std::exp(o[t] - top);
                    sum += o[t];
                }
                if (sum > 0)
                    for (int64_t t = 0; t < targets_; ++t) o[t] /= sum;
                return;
            }
        }
    }

    std::vector<int64_t> features_, true_ids_, false_ids_, true_leaf_, false_leaf_, leaf_targets_, roots_, missing_true_;
    std::vector<double> splits_, leaf_weights_;
    std::vector<int> modes_;
    std::vector<std::vector<double>> members_;
    int64_t targets_ = 1;
    Aggregate aggregate_ = Aggregate::Sum;
    PostTransform post_ = PostTransform::None;
};

}  // namespace

void register_ml_ops(OpTable& table) {
    table.add(OpSchema{"ArrayFeatureExtractor", kMl, 1, 2, 2, 1, 1, infer_array_feature_extractor,
                       [](const KernelInfo& info) { return std::make_unique<ArrayFeatureExtractorKernel>(info.node); }});
    table.add(OpSchema{"Binarizer", kMl, 1, 1, 1, 1, 1,
                       [](InferenceContext& ctx) {
                           if (ctx.has_input(0)) ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
                       },
                       [](const KernelInfo& info) { return std::make_unique<BinarizerKernel>(info.node); }});
    table.add(OpSchema{"LabelEncoder", kMl, 1, 1, 1, 1, 1, infer_label_encoder,
                       [](const KernelInfo& info) { return std::make_unique<LabelEncoderKernel>(info.node); }});
    table.add(OpSchema{"TreeEnsemble", kMl, 5, 1, 1, 1, 1,
                       [](InferenceContext& ctx) {
                           const std::optional<int64_t> targets = ctx.node.get_attribute<int64_t>("n_targets");
                           if (ctx.has_input(0) && ctx.input(0).shape.size() == 2)
                               ctx.set_output(0, ctx.input(0).dtype, {ctx.input(0).shape[0], targets});
                       },
                       [](const KernelInfo& info) { return std::make_unique<TreeEnsembleKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
