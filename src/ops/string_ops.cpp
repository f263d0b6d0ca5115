// String operators: StringConcat, StringNormalizer, StringSplit, RegexFullMatch, and
// TfIdfVectorizer (int32, int64 or string tokens). Case changes are ASCII-only; regexes run on
// std::regex (ECMAScript) after translating the RE2 constructs it lacks.
#include <algorithm>
#include <cctype>
#include <map>
#include <regex>

#include "ops/elementwise.hpp"
#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

const std::string* strings_of(const Node& node, const Tensor& t, const char* what) {
    if (t.dtype() != DType::String) fail_node(node, std::string(what) + " is " + dtype_to_string(t.dtype()) + "; expected String");
    return t.data_ptr<std::string>();
}

// ---------------------------------------------------------------------------------------------
// StringConcat: elementwise X + Y with numpy broadcasting.

class StringConcatKernel final : public NodeKernel {
public:
    explicit StringConcatKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& y = ctx.input(1);
        const std::string* xs = strings_of(node_, x, "X");
        const std::string* ys = strings_of(node_, y, "Y");
        const std::vector<int64_t> shape = broadcast_all(node_, {&x.shape(), &y.shape()});
        Tensor out(shape, DType::String);
        broadcast_apply(plan_broadcast<2>(shape, {&x.shape(), &y.shape()}), ctx.num_threads,
                        [](const std::string& a, const std::string& b) { return a + b; }, out.data_ptr<std::string>(), xs, ys);
        ctx.outputs[0] = std::move(out);
    }
};

void infer_string_concat(InferenceContext& ctx) { infer_broadcast_output(ctx, DType::String); }

// ---------------------------------------------------------------------------------------------
// StringNormalizer: drops stopwords, then lower/upper-cases. [C] or [1, C] input.

std::string ascii_case(std::string s, bool upper) {
    for (char& c : s) c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
    return s;
}

class StringNormalizerKernel final : public NodeKernel {
public:
    explicit StringNormalizerKernel(const Node& node)
        : NodeKernel(node), case_sensitive_(node.get_attribute<int64_t>("is_case_sensitive", 0) != 0) {
        const std::string action = node.get_attribute<std::string>("case_change_action", "NONE");
        if (action == "LOWER") action_ = -1;
        else if (action == "UPPER") action_ = 1;
        else if (action != "NONE") fail("case_change_action '" + action + "' is not LOWER, UPPER or NONE");
        for (const std::string& w : node.get_attribute<std::vector<std::string>>("stopwords", {}))
            stopwords_.push_back(case_sensitive_ ? w : ascii_case(w, false));
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const std::string* xs = strings_of(node_, x, "X");
        const bool two_d = x.ndim() == 2;
        if (!(x.ndim() == 1 || (two_d && x.shape()[0] == 1)))
            fail("X has shape " + shape_to_string(x.shape()) + "; expected [C] or [1, C]");
        std::vector<std::string> kept;
        for (int64_t i = 0; i < x.num_elements(); ++i) {
            const std::string key = case_sensitive_ ? xs[i] : ascii_case(xs[i], false);
            if (std::find(stopwords_.begin(), stopwords_.end(), key) != stopwords_.end()) continue;
            kept.push_back(action_ == 0 ? xs[i] : ascii_case(xs[i], action_ > 0));
        }
        if (kept.empty()) kept.emplace_back();  // all dropped: one empty string
        const auto n = static_cast<int64_t>(kept.size());
        Tensor out(two_d ? std::vector<int64_t>{1, n} : std::vector<int64_t>{n}, DType::String);
        std::move(kept.begin(), kept.end(), out.data_ptr<std::string>());
        ctx.outputs[0] = std::move(out);
    }

private:
    bool case_sensitive_;
    int action_ = 0;  // -1 lower, 0 none, 1 upper
    std::vector<std::string> stopwords_;
};

void infer_string_normalizer(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const Shape& s = ctx.input(0).shape;
    ctx.set_output(0, DType::String, s.size() == 2 ? Shape{1, std::nullopt} : Shape{std::nullopt});
}

// ---------------------------------------------------------------------------------------------
// StringSplit: Python str.split semantics (whitespace runs when the delimiter is empty).

std::vector<std::string> split(const std::string& s, const std::string& delim, int64_t maxsplit) {
    std::vector<std::string> parts;
    if (delim.empty()) {
        auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
        size_t i = 0;
        while (true) {
            while (i < s.size() && space(s[i])) ++i;
            if (i == s.size()) break;
            if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
                parts.push_back(s.substr(i));  // the rest, trailing whitespace included
                break;
            }
            size_t j = i;
            while (j < s.size() && !space(s[j])) ++j;
            parts.push_back(s.substr(i, j - i));
            i = j;
        }
        return parts;
    }
    size_t start = 0;
    while (true) {
        const size_t at = maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit ? std::string::npos : s.find(delim, start);
        if (at == std::string::npos) {
            parts.push_back(s.substr(start));
            return parts;
        }
        parts.push_back(s.substr(start, at - start));
        start = at + delim.size();
    }
}

class StringSplitKernel final : public NodeKernel {
public:
    explicit StringSplitKernel(const Node& node)
        : NodeKernel(node),
          delimiter_(node.get_attribute<std::string>("delimiter", "")),
          maxsplit_(node.has_attribute("maxsplit") ? node.get_attribute<int64_t>("maxsplit") : -1) {
        if (node.has_attribute("maxsplit") && maxsplit_ < 0) fail("maxsplit must be >= 0");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const std::string* xs = strings_of(node_, x, "X");
        const int64_t n = x.num_elements();
        std::vector<std::vector<std::string>> parts(static_cast<size_t>(n));
        int64_t widest = 0;
        for (int64_t i = 0; i < n; ++i) {
            parts[i] = split(xs[i], delimiter_, maxsplit_);
            widest = std::max<int64_t>(widest, static_cast<int64_t>(parts[i].size()));
        }
        std::vector<int64_t> shape = x.shape();
        shape.push_back(widest);
        Tensor y(shape, DType::String), z(x.shape(), DType::Int64);
        for (int64_t i = 0; i < n; ++i) {
            std::move(parts[i].begin(), parts[i].end(), y.data_ptr<std::string>() + i * widest);
            z.data_ptr<int64_t>()[i] = static_cast<int64_t>(parts[i].size());
        }
        ctx.outputs[0] = std::move(y);
        ctx.outputs[1] = std::move(z);
    }

private:
    std::string delimiter_;
    int64_t maxsplit_;  // -1: unlimited
};

void infer_string_split(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    Shape s = ctx.input(0).shape;
    ctx.set_output(1, DType::Int64, s);
    s.push_back(std::nullopt);
    ctx.set_output(0, DType::String, s);
}

// ---------------------------------------------------------------------------------------------
// RegexFullMatch

// RE2 syntax -> ECMAScript: named groups (?P<name>...) become plain groups, \A and \z become
// anchors, and a leading (?i) becomes the icase flag. Everything else is shared syntax.
std::regex compile_re2(const Node& node, std::string pattern) {
    auto flags = std::regex::ECMAScript;
    if (pattern.rfind("(?i)", 0) == 0) {
        flags |= std::regex::icase;
        pattern.erase(0, 4);
    }
    std::string out;
    for (size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i] == '\\' && i + 1 < pattern.size()) {
            const char c = pattern[i + 1];
            if (c == 'A') out += '^';
            else if (c == 'z') out += '$';
            else out.append(pattern, i, 2);
            ++i;
        } else if (pattern.compare(i, 4, "(?P<") == 0) {
            const size_t close = pattern.find('>', i);
            if (close == std::string::npos) fail_node(node, "pattern has an unterminated group name");
            out += '(';
            i = close;
        } else {
            out += pattern[i];
        }
    }
    try {
        return std::regex(out, flags);
    } catch (const std::regex_error& e) {
        fail_node(node, "pattern '" + pattern + "' is not supported: " + e.what());
    }
}

class RegexFullMatchKernel final : public NodeKernel {
public:
    explicit RegexFullMatchKernel(const Node& node)
        : NodeKernel(node), regex_(compile_re2(node, node.get_attribute<std::string>("pattern"))) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const std::string* xs = strings_of(node_, x, "X");
        Tensor y(x.shape(), DType::Bool);
        bool* yd = y.data_ptr<bool>();
        try {
            for (int64_t i = 0; i < x.num_elements(); ++i) yd[i] = std::regex_match(xs[i], regex_);
        } catch (const std::regex_error& e) {  // std::regex gives up on too complex matches
            fail(std::string("matching failed: ") + e.what());
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    std::regex regex_;  // matching through a const regex is thread-safe
};

// ---------------------------------------------------------------------------------------------
// TfIdfVectorizer: counts the pool's n-grams (n in [min, max], tokens skip apart in
// [0, max_skip_count]; 1-grams counted once) per row, then TF / IDF / TFIDF weighting.

class TfIdfKernel final : public NodeKernel {
public:
    explicit TfIdfKernel(const Node& node)
        : NodeKernel(node),
          min_n_(node.get_attribute<int64_t>("min_gram_length")),
          max_n_(node.get_attribute<int64_t>("max_gram_length")),
          max_skip_(node.get_attribute<int64_t>("max_skip_count")),
          weights_(node.get_attribute<std::vector<double>>("weights", {})) {
        const std::string mode = node.get_attribute<std::string>("mode");
        mode_ = mode == "TF" ? 0 : mode == "IDF" ? 1 : mode == "TFIDF" ? 2 : -1;
        if (mode_ < 0) fail("mode '" + mode + "' is not TF, IDF or TFIDF");
        if (min_n_ < 1 || max_n_ < min_n_ || max_skip_ < 0)
            fail("need 1 <= min_gram_length <= max_gram_length and max_skip_count >= 0");
        const auto counts = node.get_attribute<std::vector<int64_t>>("ngram_counts");
        const auto indexes = node.get_attribute<std::vector<int64_t>>("ngram_indexes");
        strings_ = node.has_attribute("pool_strings");
        if (strings_ == node.has_attribute("pool_int64s")) fail("exactly one of pool_strings and pool_int64s must be given");
        // Strings become ids (their first pool position), so both kinds of pool are int64 n-grams.
        std::vector<int64_t> pool;
        if (strings_) {
            for (const std::string& s : node.get_attribute<std::vector<std::string>>("pool_strings"))
                pool.push_back(string_ids_.emplace(s, static_cast<int64_t>(pool.size())).first->second);
        } else {
            pool = node.get_attribute<std::vector<int64_t>>("pool_int64s");
        }
        const auto pool_size = static_cast<int64_t>(pool.size());
        size_t gram = 0;
        for (size_t level = 0; level < counts.size(); ++level) {
            const int64_t n = static_cast<int64_t>(level) + 1;
            const int64_t begin = counts[level], end = level + 1 < counts.size() ? counts[level + 1] : pool_size;
            if (begin < 0 || end > pool_size || begin > end || (end - begin) % n != 0)
                fail("ngram_counts " + shape_to_string(counts) + " does not split a pool of " + std::to_string(pool_size));
            for (int64_t p = begin; p < end; p += n, ++gram) {
                if (gram >= indexes.size()) fail("ngram_indexes has fewer entries than the pool has n-grams");
                std::vector<int64_t> key;
                key.assign(pool.begin() + p, pool.begin() + p + n);
                grams_[key] = {indexes[gram], gram};
            }
        }
        for (int64_t i : indexes) {
            if (i < 0) fail("ngram_indexes must be >= 0");
            output_size_ = std::max(output_size_, i + 1);
        }
        if (!weights_.empty() && weights_.size() != indexes.size()) fail("weights must hold one value per n-gram");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() != 1 && x.ndim() != 2) fail("X has shape " + shape_to_string(x.shape()) + "; expected [C] or [N, C]");
        const int64_t rows = x.ndim() == 2 ? x.shape()[0] : 1, cols = x.shape().back();
        std::vector<int64_t> tokens(static_cast<size_t>(x.num_elements()));
        if (strings_ != (x.dtype() == DType::String))
            fail("X is " + dtype_to_string(x.dtype()) + " but the pool holds " + (strings_ ? "strings" : "integers"));
        for (int64_t i = 0; i < x.num_elements(); ++i) {
            switch (x.dtype()) {
                case DType::String: {
                    auto it = string_ids_.find(x.data_ptr<std::string>()[i]);
                    tokens[i] = it == string_ids_.end() ? -1 : it->second;  // -1: in no n-gram
                    break;
                }
                case DType::Int32: tokens[i] = x.data_ptr<int32_t>()[i]; break;
                case DType::Int64: tokens[i] = x.data_ptr<int64_t>()[i]; break;
                default: fail("X is " + dtype_to_string(x.dtype()) + "; expected String, Int32 or Int64");
            }
        }
        Tensor y(x.ndim() == 2 ? std::vector<int64_t>{rows, output_size_} : std::vector<int64_t>{output_size_}, DType::Float32);
        float* yd = y.data_ptr<float>();
        std::fill_n(yd, y.num_elements(), 0.0f);
        std::vector<int64_t> key;
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t* row = tokens.data() + r * cols;
            std::vector<double> counts(grams_.size(), 0.0);
            for (int64_t n = min_n_; n <= max_n_; ++n)
                for (int64_t skip = 0; skip <= (n == 1 ? 0 : max_skip_); ++skip)
                    for (int64_t start = 0; start + (n - 1) * (skip + 1) < cols; ++start) {
                        key.clear();
                        for (int64_t k = 0; k < n; ++k) key.push_back(row[start + k * (skip + 1)]);
                        auto it = grams_.find(key);
                        if (it != grams_.end()) counts[it->second.second] += 1;
                    }
            for (const auto& [k, where] : grams_) {
                const double c = counts[where.second];
                const double w = weights_.empty() ? 1.0 : weights_[where.second];
                const double v = mode_ == 0 ? c : mode_ == 1 ? (c > 0 ? w : 0.0) : c * w;
                yd[r * output_size_ + where.first] = static_cast<float>(v);
            }
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    int64_t min_n_, max_n_, max_skip_;
    int mode_ = 0;
    std::vector<double> weights_;
    bool strings_ = false;
    std::map<std::string, int64_t> string_ids_;
    std::map<std::vector<int64_t>, std::pair<int64_t, size_t>> grams_;  // n-gram -> (output index, n-gram number)
    int64_t output_size_ = 0;
};

void infer_tfidf(InferenceContext& ctx) {
    const auto indexes = ctx.node.get_attribute<std::vector<int64_t>>("ngram_indexes", {});
    const std::optional<int64_t> size =
        indexes.empty() ? std::nullopt : std::optional<int64_t>(*std::max_element(indexes.begin(), indexes.end()) + 1);
    if (!ctx.has_input(0)) return;
    const Shape& s = ctx.input(0).shape;
    if (s.size() != 1 && s.size() != 2) fail_node(ctx.node, "X has shape " + shape_to_string(s) + "; expected [C] or [N, C]");
    ctx.set_output(0, DType::Float32, s.size() == 2 ? Shape{s[0], size} : Shape{size});
}

}  // namespace

void register_string_ops(OpTable& table) {
    table.add(OpSchema{"StringConcat", "", 20, 2, 2, 1, 1, infer_string_concat,
                       [](const KernelInfo& info) { return std::make_unique<StringConcatKernel>(info.node); }});
    table.add(OpSchema{"StringNormalizer", "", 10, 1, 1, 1, 1, infer_string_normalizer,
                       [](const KernelInfo& info) { return std::make_unique<StringNormalizerKernel>(info.node); }});
    table.add(OpSchema{"StringSplit", "", 20, 1, 1, 2, 2, infer_string_split,
                       [](const KernelInfo& info) { return std::make_unique<StringSplitKernel>(info.node); }});
    table.add(OpSchema{"RegexFullMatch", "", 20, 1, 1, 1, 1,
                       [](InferenceContext& ctx) {
                           if (ctx.has_input(0)) ctx.set_output(0, DType::Bool, ctx.input(0).shape);
                       },
                       [](const KernelInfo& info) { return std::make_unique<RegexFullMatchKernel>(info.node); }});
    table.add(OpSchema{"TfIdfVectorizer", "", 9, 1, 1, 1, 1, infer_tfidf,
                       [](const KernelInfo& info) { return std::make_unique<TfIdfKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
