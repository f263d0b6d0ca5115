#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "test_util.hpp"

using namespace pyflame_rt;
using namespace pyflame_rt::testing;

namespace {

template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const ValidationError& e) {
        return e.what();
    }
    return "<no ValidationError>";
}

}  // namespace

TEST(Session, RunsGraphAgainstReferenceLoops) {
    InferenceSession session(make_mlp_graph());
    const int64_t batch = 5;
    auto x = random_values(batch * 4, 1), x2 = random_values(batch * 3, 2);
    auto out = session.run({}, {{"x", make_tensor({batch, 4}, x)}, {"x2", make_tensor({batch, 3}, x2)}});
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].shape(), (std::vector<int64_t>{batch, 3}));
    const auto expected = mlp_reference(x, x2, batch);
    const auto got = to_vector(out[0]);
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-5) << i;
}

TEST(Session, OutputSelectionAndInfo) {
    auto g = make_mlp_graph();
    g->add_output(TensorInfo{"h", DType::Float32, {}, false});
    InferenceSession session(g);
    const auto outs = session.get_outputs();
    ASSERT_EQ(outs.size(), 2u);
    EXPECT_EQ(outs[1].shape, (Shape{std::nullopt, 3}));  // filled by shape inference
    EXPECT_EQ(session.get_inputs()[0].type_str(), "tensor(float)");
    EXPECT_EQ(session.get_providers(), (std::vector<std::string>{"CPUExecutionProvider"}));
    auto x = random_values(4, 3), x2 = random_values(3, 4);
    auto only_h = session.run({"h"}, {{"x", make_tensor({1, 4}, x)}, {"x2", make_tensor({1, 3}, x2)}});
    ASSERT_EQ(only_h.size(), 1u);
    EXPECT_EQ(only_h[0].shape(), (std::vector<int64_t>{1, 3}));
    EXPECT_NE(error_of([&] { session.run({"nope"}, {{"x", make_tensor({1, 4}, x)}, {"x2", make_tensor({1, 3}, x2)}}); })
                  .find("unknown output 'nope'"),
              std::string::npos);
}

TEST(Session, BadFeedsRaiseValidationErrorNamingTheInput) {
    InferenceSession session(make_mlp_graph());
    auto x = make_tensor({2, 4}, random_values(8, 5));
    auto x2 = make_tensor({2, 3}, random_values(6, 6));
    EXPECT_NE(error_of([&] { session.run({}, {{"x", x}}); }).find("missing input 'x2'"), std::string::npos);
    EXPECT_NE(error_of([&] { session.run({}, {{"x", x}, {"x2", x2}, {"zzz", x2}}); }).find("unknown input 'zzz'"),
              std::string::npos);
    Tensor x_double({2, 4}, DType::Float64);
    const auto dtype_msg = error_of([&] { session.run({}, {{"x", x_double}, {"x2", x2}}); });
    EXPECT_NE(dtype_msg.find("input 'x'"), std::string::npos);
    EXPECT_NE(dtype_msg.find("Float32"), std::string::npos);
    EXPECT_NE(dtype_msg.find("Float64"), std::string::npos);
    const auto shape_msg = error_of([&] { session.run({}, {{"x", make_tensor({2, 5}, random_values(10, 1))}, {"x2", x2}}); });
    EXPECT_NE(shape_msg.find("[?, 4]"), std::string::npos);
    EXPECT_NE(shape_msg.find("[2, 5]"), std::string::npos);
    EXPECT_NE(error_of([&] { session.run({}, {{"x", x.reshape({8})}, {"x2", x2}}); }).find("input 'x'"), std::string::npos);
    // The session is still fine afterwards.
    EXPECT_EQ(session.run({}, {{"x", x}, {"x2", x2}}).size(), 1u);
}

TEST(Session, OptionsAreValidated) {
    SessionOptions o;
    EXPECT_TRUE(o.validate().empty());
    o.device = "gpu";
    o.num_threads = -1;
    o.log_level = "chatty";
    o.optimization_level = 4;
    o.execution_mode = "sideways";
    EXPECT_EQ(o.validate().size(), 5u);
    EXPECT_THROW(InferenceSession(make_mlp_graph(), o), ValidationError);
    SessionOptions wse;
    wse.device = "wse";
    try {
        InferenceSession s(make_mlp_graph(), wse);
        FAIL();
    } catch (const PyFlameRTError& e) {
        EXPECT_NE(std::string(e.what()).find("WSE"), std::string::npos);
    }
    EXPECT_THROW(InferenceSession(make_mlp_graph(), {}, {"TensorRTExecutionProvider"}), ValidationError);
    SessionOptions tight;
    tight.memory_limit = 16;
    EXPECT_THROW(InferenceSession(make_mlp_graph(), tight), ValidationError);
}

TEST(Session, MissingFileAndInvalidGraph) {
    EXPECT_THROW(InferenceSession("/nonexistent/model.pfm"), FileNotFoundError);
    auto g = make_mlp_graph();
    g->add_node(make_node("Relu", "dangling", {"ghost"}, {"z"}));
    EXPECT_THROW(InferenceSession s(g), InvalidModelError);
}

TEST(Session, UnsupportedOperatorNamesOpDomainAndOpset) {
    auto g = make_mlp_graph();
    g->add_node(make_node("FrobnicateNotAnOp", "f", {"y"}, {"z"}));
    g->add_output(TensorInfo{"z", DType::Float32, {}, false});
    try {
        InferenceSession s(g);
        FAIL();
    } catch (const UnsupportedOperatorError& e) {
        EXPECT_EQ(e.op_type(), "FrobnicateNotAnOp");
        EXPECT_NE(std::string(e.what()).find("ai.onnx"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("opset 17"), std::string::npos);
    }
}

TEST(Session, ConcurrentRunsFromManyThreads) {
    InferenceSession session(make_mlp_graph());
    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (int iter = 0; iter < 50; ++iter) {
                const int64_t batch = 1 + (t + iter) % 4;
                auto x = random_values(batch * 4, t * 1000 + iter), x2 = random_values(batch * 3, t * 7 + iter);
                auto out = session.run({}, {{"x", make_tensor({batch, 4}, x)}, {"x2", make_tensor({batch, 3}, x2)}});
                const auto expected = mlp_reference(x, x2, batch);
                const auto got = to_vector(out[0]);
                for (size_t i = 0; i < expected.size(); ++i)
                    if (std::fabs(got[i] - expected[i]) > 1e-5) ++mismatches;
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(mismatches.load(), 0);
}

TEST(Session, ProfilingWritesChromeTrace) {
    TempDir dir;
    SessionOptions o;
    o.enable_profiling = true;
    o.profile_file_prefix = dir.file("prof");
    o.optimization_level = 0;  // every node of the graph runs (level 2 fuses fc and relu)
    InferenceSession session(make_mlp_graph(), o);
    EXPECT_GT(session.get_profiling_start_time_ns(), 0);
    RunOptions ro;
    ro.tag = "batch_42";
    session.run({}, {{"x", make_tensor({1, 4}, {1, 2, 3, 4})}, {"x2", make_tensor({1, 3}, {0, 0, 0})}}, ro);
    const std::string path = session.end_profiling();
    std::ifstream in(path);
    ASSERT_TRUE(in.good()) << path;
    const auto doc = nlohmann::json::parse(in);
    const auto& events = doc.at("traceEvents");
    std::set<std::string> names;
    bool tagged = false;
    for (const auto& e : events) {
        EXPECT_EQ(e.at("ph"), "X");
        EXPECT_GE(e.at("dur").get<int64_t>(), 0);
        names.insert(e.at("name").get<std::string>());
        if (e.at("args").value("tag", "") == "batch_42") tagged = true;
    }
    EXPECT_TRUE(names.count("fc") && names.count("relu") && names.count("add"));
    EXPECT_TRUE(tagged);
}

TEST(Session, TimeoutStopsRunAndSessionStaysUsable) {
    // A custom op that sleeps makes the run outlast a 1 ms budget deterministically.
    OperatorRegistry::instance().register_op("TestSleep", [](const std::vector<Tensor>& in, const auto&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return in[0];
    });
    auto g = std::make_shared<Graph>("slow");
    g->add_input(TensorInfo{"x", DType::Float32, {1}});
    g->add_node(make_node("TestSleep", "s1", {"x"}, {"a"}));
    g->add_node(make_node("TestSleep", "s2", {"a"}, {"b"}));
    g->add_node(make_node("Relu", "r", {"b"}, {"y"}));
    g->add_output(TensorInfo{"y", DType::Float32, {1}});
    InferenceSession session(g);
    RunOptions ro;
    ro.timeout_ms = 1;
    EXPECT_THROW(session.run({}, {{"x", make_tensor({1}, {-3})}}, ro), RunTimeoutError);
    auto out = session.run({}, {{"x", make_tensor({1}, {-3})}});
    EXPECT_EQ(to_vector(out[0]), (std::vector<float>{0}));
    OperatorRegistry::instance().unregister_op("TestSleep");
}

TEST(OperatorRegistry, CustomOpRunsInsideSession) {
    auto& reg = OperatorRegistry::instance();
    reg.register_op("ScaleBy", [](const std::vector<Tensor>& in, const std::unordered_map<std::string, std::any>& attrs) {
        const double k = std::any_cast<double>(attrs.at("k"));
        Tensor out(in[0].shape(), DType::Float32);
        for (int64_t i = 0; i < out.num_elements(); ++i) out.data_ptr<float>()[i] = in[0].data_ptr<float>()[i] * float(k);
        return out;
    });
    EXPECT_TRUE(reg.has_op("ScaleBy"));
    const auto ops = reg.registered_ops();
    EXPECT_NE(std::find(ops.begin(), ops.end(), "ScaleBy"), ops.end());
    auto direct = reg.execute("ScaleBy", {make_tensor({2}, {1, 2})}, {{"k", std::any(3.0)}});
    EXPECT_EQ(to_vector(direct), (std::vector<float>{3, 6}));
    EXPECT_THROW(reg.execute("NoSuchOp", {}, {}), UnsupportedOperatorError);

    auto g = std::make_shared<Graph>("custom");
    g->add_input(TensorInfo{"x", DType::Float32, {3}});
    auto n = make_node("ScaleBy", "scale", {"x"}, {"s"});
    n->set_attribute("k", -2.0);
    g->add_node(n);
    g->add_node(make_node("Relu", "r", {"s"}, {"y"}));
    g->add_output(TensorInfo{"y", DType::Float32, {3}});
    InferenceSession session(g);
    auto out = session.run({}, {{"x", make_tensor({3}, {1, -2, 3})}});
    EXPECT_EQ(to_vector(out[0]), (std::vector<float>{0, 4, 0}));
    auto cpu = create_backend("cpu", {});
    EXPECT_TRUE(cpu->supports_op("ScaleBy"));
    reg.unregister_op("ScaleBy");
}

TEST(Backend, CpuBackendInterface) {
    auto cpu = create_backend("CPUExecutionProvider", {});
    EXPECT_EQ(cpu->name(), "CPUExecutionProvider");
    EXPECT_EQ(cpu->device_type(), "cpu");
    for (const char* op : {"Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Softmax",
                           "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Flatten", "Reshape",
                           "Transpose", "Concat", "Identity", "Constant"})
        EXPECT_TRUE(cpu->supports_op(op)) << op;
    EXPECT_FALSE(cpu->supports_op("NotAnOp"));
    const auto ops = cpu->supported_ops();
    EXPECT_NE(std::find(ops.begin(), ops.end(), "Conv"), ops.end());
    auto g = make_mlp_graph();
    auto x = random_values(4, 9), x2 = random_values(3, 10);
    auto out = cpu->execute(*g, {{"x", make_tensor({1, 4}, x)}, {"x2", make_tensor({1, 3}, x2)}});
    const auto expected = mlp_reference(x, x2, 1);
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(to_vector(out[0])[i], expected[i], 1e-5);
    Tensor t = cpu->allocate({2, 2}, DType::Float32);
    EXPECT_EQ(t.num_elements(), 4);
    cpu->deallocate(t);
    EXPECT_TRUE(t.empty());
    EXPECT_EQ(get_available_providers(), (std::vector<std::string>{"CPUExecutionProvider"}));
    EXPECT_EQ(get_device_count("cpu"), 1);
    EXPECT_EQ(get_device_count("wse"), 0);
}

TEST(Session, InputOfUnknownRankTakesAnyShape) {
    auto g = std::make_shared<Graph>("any_rank");
    TensorInfo x{"x", DType::Float32, {}};
    x.rank_known = false;
    g->add_input(x);
    g->add_node(make_node("Relu", "r", {"x"}, {"y"}));
    g->add_output(TensorInfo{"y", DType::Float32, {}, false});
    InferenceSession session(g);
    EXPECT_FALSE(session.get_inputs()[0].rank_known);
    for (const auto& shape : {std::vector<int64_t>{4}, std::vector<int64_t>{2, 2}}) {
        auto out = session.run({}, {{"x", make_tensor(shape, {-1, 2, -3, 4})}});
        EXPECT_EQ(out[0].shape(), shape);
        EXPECT_EQ(to_vector(out[0]), (std::vector<float>{0, 2, 0, 4}));
    }
    TempDir dir;
    save_model(*g, dir.file("m.pfm"));
    EXPECT_FALSE(load_model(dir.file("m.pfm"))->inputs()[0].rank_known);
    EXPECT_TRUE(load_model(dir.file("m.pfm"))->nodes().size() == 1);
}
