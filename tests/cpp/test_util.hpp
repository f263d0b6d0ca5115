#pragma once
// Helpers shared by the C++ tests.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "pyflame_rt/pyflame_rt.hpp"

namespace pyflame_rt::testing {

// Runs f and expects a ValidationError whose message contains every needle.
template <typename F>
void expect_validation_error(F&& f, const std::vector<std::string>& needles) {
    try {
        f();
        ADD_FAILURE() << "expected a ValidationError";
    } catch (const ValidationError& e) {
        for (const auto& needle : needles)
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "'" << needle << "' not in: " << e.what();
    }
}

// n standard-normal floats from a seeded generator.
inline std::vector<float> random_values(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist;
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

inline Tensor make_tensor(const std::vector<int64_t>& shape, const std::vector<float>& values) {
    Tensor t(shape, DType::Float32);
    std::copy(values.begin(), values.end(), t.data_ptr<float>());
    return t;
}

inline std::vector<float> to_vector(const Tensor& t) {
    return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.num_elements());
}

inline std::shared_ptr<Node> make_node(const std::string& op, const std::string& name, std::vector<std::string> in,
                                       std::vector<std::string> out) {
    return std::make_shared<Node>(op, name, std::move(in), std::move(out));
}

// A fresh scratch directory under /tmp, removed with its contents at scope exit.
class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/pyflame_rt_test_XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

inline std::vector<char> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::vector<float> read_f32(const std::string& path) {
    auto bytes = read_bytes(path);
    std::vector<float> v(bytes.size() / sizeof(float));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
    return v;
}

// y = relu(x @ W^T + b) + x2, built from Gemm, Relu and Add, with W [3,4], b [3].
inline std::shared_ptr<Graph> make_mlp_graph() {
    auto g = std::make_shared<Graph>("mlp");
    g->add_input(TensorInfo{"x", DType::Float32, {std::nullopt, 4}});
    g->add_input(TensorInfo{"x2", DType::Float32, {std::nullopt, 3}});
    g->add_initializer("W", make_tensor({3, 4}, {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f, 0.7f, -0.8f, 0.9f, 1.0f, -1.1f, 1.2f}));
    g->add_initializer("b", make_tensor({3}, {0.05f, -0.1f, 0.2f}));
    auto gemm = make_node("Gemm", "fc", {"x", "W", "b"}, {"h"});
    gemm->set_attribute("transB", int64_t{1});
    g->add_node(gemm);
    g->add_node(make_node("Relu", "relu", {"h"}, {"r"}));
    g->add_node(make_node("Add", "add", {"r", "x2"}, {"y"}));
    g->add_output(TensorInfo{"y", DType::Float32, {std::nullopt, 3}});
    g->opset_imports()[""] = 17;
    return g;
}

// The same math as make_mlp_graph, as plain loops.
inline std::vector<float> mlp_reference(const std::vector<float>& x, const std::vector<float>& x2, int64_t batch) {
    const float W[3][4] = {{0.1f, -0.2f, 0.3f, 0.4f}, {-0.5f, 0.6f, 0.7f, -0.8f}, {0.9f, 1.0f, -1.1f, 1.2f}};
    const float b[3] = {0.05f, -0.1f, 0.2f};
    std::vector<float> y(batch * 3);
    for (int64_t n = 0; n < batch; ++n)
        for (int j = 0; j < 3; ++j) {
            float acc = b[j];
            for (int k = 0; k < 4; ++k) acc += x[n * 4 + k] * W[j][k];
            y[n * 3 + j] = std::max(acc, 0.0f) + x2[n * 3 + j];
        }
    return y;
}

}  // namespace pyflame_rt::testing
