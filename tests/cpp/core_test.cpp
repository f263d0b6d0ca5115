#include <gtest/gtest.h>

#include <cstdint>

#include "core/tensor_arena.hpp"
#include "test_util.hpp"

using namespace pyflame_rt;
using namespace pyflame_rt::testing;

TEST(DType, ReferenceCodesAndSizes) {
    EXPECT_EQ(static_cast<int>(DType::Float32), 0);
    EXPECT_EQ(static_cast<int>(DType::Float16), 1);
    EXPECT_EQ(static_cast<int>(DType::BFloat16), 2);
    EXPECT_EQ(static_cast<int>(DType::Float64), 3);
    EXPECT_EQ(static_cast<int>(DType::Int64), 4);
    EXPECT_EQ(static_cast<int>(DType::Int32), 5);
    EXPECT_EQ(static_cast<int>(DType::Int16), 6);
    EXPECT_EQ(static_cast<int>(DType::Int8), 7);
    EXPECT_EQ(static_cast<int>(DType::UInt8), 8);
    EXPECT_EQ(static_cast<int>(DType::Bool), 9);
    EXPECT_EQ(dtype_size(DType::Float32), 4u);
    EXPECT_EQ(dtype_size(DType::BFloat16), 2u);
    EXPECT_EQ(dtype_size(DType::Float64), 8u);
    EXPECT_EQ(dtype_size(DType::Bool), 1u);
}

TEST(DType, StringRoundTrip) {
    for (int code = 0; code < kNumDTypes; ++code) {
        const auto d = static_cast<DType>(code);
        EXPECT_EQ(string_to_dtype(dtype_to_string(d)), d);
    }
    EXPECT_EQ(dtype_to_string(DType::Float32), "Float32");
    EXPECT_EQ(string_to_dtype("float32"), DType::Float32);
    EXPECT_EQ(string_to_dtype("float"), DType::Float32);
    EXPECT_THROW(string_to_dtype("quaternion"), ValidationError);
}

TEST(DType, AppendedTypesMapToOnnx) {
    EXPECT_EQ(static_cast<int>(DType::UInt16), 10);  // appended after the reference's ten
    EXPECT_EQ(dtype_from_onnx(4), DType::UInt16);
    EXPECT_EQ(dtype_from_onnx(8), DType::String);
    EXPECT_EQ(dtype_from_onnx(22), DType::Int4);
    EXPECT_EQ(dtype_to_onnx(DType::Float32), 1);
    EXPECT_EQ(dtype_to_onnx(DType::BFloat16), 16);
    for (int code = 0; code < kNumDTypes; ++code)
        EXPECT_EQ(dtype_from_onnx(dtype_to_onnx(static_cast<DType>(code))), static_cast<DType>(code));
    EXPECT_THROW(dtype_from_onnx(0), ValidationError);
    EXPECT_EQ(dtype_size(DType::Complex128), 16u);
    EXPECT_EQ(dtype_size(DType::Int4), 1u);  // held unpacked
    EXPECT_TRUE(is_float_dtype(DType::Float8E4M3FN));
    EXPECT_TRUE(is_integer_dtype(DType::UInt64));
    EXPECT_FALSE(is_integer_dtype(DType::Bool));
}

TEST(Tensor, StringElementsAreObjects) {
    Tensor s({3}, DType::String);
    s.data_ptr<std::string>()[0] = "alpha";
    s.data_ptr<std::string>()[2] = std::string(1000, 'x');  // heap-allocated string
    Tensor c = s.clone();
    s.data_ptr<std::string>()[0] = "changed";
    EXPECT_EQ(c.data_ptr<std::string>()[0], "alpha");
    EXPECT_EQ(c.data_ptr<std::string>()[1], "");
    EXPECT_EQ(c.data_ptr<std::string>()[2].size(), 1000u);
    EXPECT_EQ(Tensor::zeros({2}, DType::String).data_ptr<std::string>()[1], "");
}

TEST(NodeArg, TypeString) {
    EXPECT_EQ((NodeArg{"x", DType::Float32, {}}).type_str(), "tensor(float)");
    EXPECT_EQ((NodeArg{"x", DType::Int64, {}}).type_str(), "tensor(int64)");
    EXPECT_EQ((NodeArg{"x", DType::Float64, {}}).type_str(), "tensor(double)");
    EXPECT_EQ(shape_to_string(Shape{std::nullopt, 3}), "[?, 3]");
}

TEST(Tensor, OwningIsAlignedAndSized) {
    Tensor t({2, 3, 5}, DType::Float32);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
    EXPECT_EQ(t.ndim(), 3u);
    EXPECT_EQ(t.num_elements(), 30);
    EXPECT_EQ(t.size_bytes(), 120u);
    EXPECT_TRUE(t.owns_data());
    EXPECT_FALSE(t.empty());
    EXPECT_TRUE(Tensor().empty());
}

TEST(Tensor, BigBuffersStartOnHugePageBoundaries) {
    // 2 MiB-aligned, so transparent huge pages can back them from their first byte.
    Tensor big({3 << 18}, DType::Float32);  // 3 MiB
    EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % (size_t{2} << 20), 0u);
    static_cast<float*>(big.data())[(3 << 18) - 1] = 1.0f;  // the whole size is usable
    Tensor small({100}, DType::Float32);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 64, 0u);
}

TEST(Tensor, NonOwningViewSeesExternalMemory) {
    float buffer[6] = {1, 2, 3, 4, 5, 6};
    Tensor view(buffer, {2, 3}, DType::Float32);
    EXPECT_FALSE(view.owns_data());
    buffer[4] = 42;
    EXPECT_EQ(view.data_ptr<float>()[4], 42);
    Tensor owned = view.clone();
    EXPECT_TRUE(owned.owns_data());
    buffer[4] = 7;
    EXPECT_EQ(owned.data_ptr<float>()[4], 42);  // deep copy
}

TEST(Tensor, CopySharesCloneCopies) {
    Tensor a = make_tensor({4}, {1, 2, 3, 4});
    Tensor shared = a;
    Tensor deep = a.clone();
    Tensor v = a.view();
    a.data_ptr<float>()[0] = 9;
    EXPECT_EQ(shared.data_ptr<float>()[0], 9);
    EXPECT_EQ(v.data_ptr<float>()[0], 9);
    EXPECT_EQ(deep.data_ptr<float>()[0], 1);
    Tensor moved = std::move(shared);
    EXPECT_EQ(moved.data_ptr<float>()[0], 9);
}

TEST(Tensor, ReshapeSharesStorageAndChecksCount) {
    Tensor a = make_tensor({2, 3}, {0, 1, 2, 3, 4, 5});
    Tensor r = a.reshape({3, 2});
    EXPECT_EQ(r.shape(), (std::vector<int64_t>{3, 2}));
    EXPECT_EQ(r.data(), a.data());
    EXPECT_EQ(a.reshape({-1}).shape(), (std::vector<int64_t>{6}));
    EXPECT_THROW(a.reshape({4, 2}), ValidationError);
    EXPECT_THROW(a.reshape({-1, -1}), ValidationError);
}

TEST(Node, TypedAttributes) {
    Node n("Conv", "conv1", {"x", "w"}, {"y"});
    n.set_attribute("group", int64_t{2});
    n.set_attribute("alpha", 0.5);
    n.set_attribute("auto_pad", std::string("SAME_UPPER"));
    n.set_attribute("kernel_shape", std::vector<int64_t>{3, 3});
    n.set_attribute("scales", std::vector<double>{1.0, 2.0});
    n.set_attribute("value", make_tensor({1}, {3.5f}));
    n.set_attribute("body", std::make_shared<Graph>("body"));
    EXPECT_EQ(n.get_attribute<int64_t>("group"), 2);
    EXPECT_DOUBLE_EQ(n.get_attribute<double>("alpha"), 0.5);
    EXPECT_EQ(n.get_attribute<std::string>("auto_pad"), "SAME_UPPER");
    EXPECT_EQ(n.get_attribute<std::vector<int64_t>>("kernel_shape"), (std::vector<int64_t>{3, 3}));
    EXPECT_EQ(n.get_attribute<std::vector<double>>("scales"), (std::vector<double>{1.0, 2.0}));
    EXPECT_EQ(n.get_attribute<Tensor>("value").data_ptr<float>()[0], 3.5f);
    EXPECT_EQ(n.get_attribute<std::shared_ptr<Graph>>("body")->name(), "body");
    EXPECT_EQ(n.get_attribute<int64_t>("missing", 7), 7);
    EXPECT_DOUBLE_EQ(n.get_attribute<double>("group"), 2.0);  // int widens to float
    EXPECT_TRUE(n.has_attribute("group"));
    EXPECT_EQ(n.attribute_names().size(), 7u);
}

TEST(Node, MissingOrWrongAttributeNamesNodeAndAttribute) {
    Node n("Conv", "conv1", {"x"}, {"y"});
    n.set_attribute("auto_pad", std::string("VALID"));
    try {
        n.get_attribute<int64_t>("group");
        FAIL();
    } catch (const ValidationError& e) {
        EXPECT_NE(std::string(e.what()).find("conv1"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("group"), std::string::npos);
    }
    try {
        n.get_attribute<int64_t>("auto_pad", 0);
        FAIL();
    } catch (const ValidationError& e) {
        EXPECT_NE(std::string(e.what()).find("auto_pad"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("string"), std::string::npos);
    }
}

TEST(Graph, TopologicalSortOrdersProducersFirst) {
    Graph g("g");
    g.add_input(TensorInfo{"x", DType::Float32, {2}});
    g.add_node(make_node("Relu", "c", {"b"}, {"c"}));
    g.add_node(make_node("Relu", "b", {"a"}, {"b"}));
    g.add_node(make_node("Relu", "a", {"x"}, {"a"}));
    g.add_output(TensorInfo{"c", DType::Float32, {2}});
    const auto order = g.topological_sort();
    ASSERT_EQ(order.size(), 3u);
    EXPECT_EQ(order[0]->name(), "a");
    EXPECT_EQ(order[1]->name(), "b");
    EXPECT_EQ(order[2]->name(), "c");
    EXPECT_TRUE(g.validate().empty());
}

TEST(Graph, ValidateListsEveryProblem) {
    Graph g("bad");
    g.add_input(TensorInfo{"x", DType::Float32, {2}});
    g.add_initializer("x", make_tensor({3}, {1, 2, 3}));       // shadows input, wrong shape
    g.add_node(make_node("Relu", "n1", {"ghost"}, {"y"}));     // consumes a value nobody makes
    g.add_node(make_node("Relu", "n2", {"x"}, {"y"}));         // second producer of y
    g.add_node(make_node("Relu", "p", {"q"}, {"p_out"}));      // cycle p <-> q
    g.add_node(make_node("Relu", "q", {"p_out"}, {"q"}));
    g.add_output(TensorInfo{"nowhere", DType::Float32, {2}});  // produced by nobody
    const auto problems = g.validate();
    auto mentions = [&](const std::string& what) {
        for (const auto& p : problems)
            if (p.find(what) != std::string::npos) return true;
        return false;
    };
    EXPECT_TRUE(mentions("'ghost'"));
    EXPECT_TRUE(mentions("produced by two nodes"));
    EXPECT_TRUE(mentions("cycle"));
    EXPECT_TRUE(mentions("graph output 'nowhere'"));
    EXPECT_TRUE(mentions("shadows graph input 'x'"));
    EXPECT_GE(problems.size(), 5u);
    EXPECT_THROW(g.topological_sort(), ValidationError);
}

TEST(Graph, InitializersAndMetadata) {
    Graph g("m");
    g.add_initializer("w", make_tensor({2}, {1, 2}));
    EXPECT_TRUE(g.has_initializer("w"));
    EXPECT_EQ(g.get_initializer("w").num_elements(), 2);
    EXPECT_THROW(g.get_initializer("nope"), ValidationError);
    g.metadata().producer_name = "test";
    g.metadata().custom_metadata["k"] = "v";
    EXPECT_EQ(g.metadata().custom_metadata.at("k"), "v");
}

// The memory plan: as many buffers as tensors alive at once, each as big as the biggest tensor
// it holds (a freed buffer serves a smaller tensor, or grows for a bigger one).
TEST(TensorArena, PlanNeedsOneBufferPerLiveTensor) {
    const size_t big = 400 << 10, mid = 100 << 10, small = 30 << 10, huge = 900 << 10;
    const std::vector<std::pair<size_t, bool>> events = {
        {big, true}, {mid, true},  // allocations 0, 1: two alive
        {0, false},                // 0 freed
        {small, true},             // 2: takes 0's buffer (the best fit)
        {1, false}, {2, false},    // all freed
        {huge, true}, {mid, true}, // 3 grows the biggest free buffer; 4 takes the other
    };
    const std::vector<size_t> buffers = pyflame_rt::TensorArena::plan(events);
    ASSERT_EQ(buffers.size(), 2u);
    EXPECT_EQ(buffers[0], pyflame_rt::TensorArena::size_class(huge));
    EXPECT_EQ(buffers[1], pyflame_rt::TensorArena::size_class(mid));

    // Reserved, the plan serves the same run with no allocation from the heap.
    auto arena = pyflame_rt::TensorArena::create();
    arena->reserve(buffers);
    const auto before = arena->stats().heap_allocations;
    {
        auto a0 = arena->allocate(big);
        auto a1 = arena->allocate(mid);
        a0.reset();
        auto a2 = arena->allocate(small);
        a1.reset();
        a2.reset();
        auto a3 = arena->allocate(huge);
        auto a4 = arena->allocate(mid);
    }
    EXPECT_EQ(arena->stats().heap_allocations, before);
}
