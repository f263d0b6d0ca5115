#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.hpp"

using namespace pyflame_rt;
using namespace pyflame_rt::testing;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<Graph> make_rich_graph() {
    auto g = make_mlp_graph();
    g->metadata().producer_name = "format_test";
    g->metadata().producer_version = "1.2";
    g->metadata().domain = "test.domain";
    g->metadata().model_version = 7;
    g->metadata().doc_string = "doc";
    g->metadata().custom_metadata["author"] = "me";
    auto n = g->nodes()[1];
    n->set_attribute("f", 1.5);
    n->set_attribute("s", std::string("text"));
    n->set_attribute("ints", std::vector<int64_t>{1, -2, 3});
    n->set_attribute("floats", std::vector<double>{0.25, -0.5});
    n->set_attribute("strings", std::vector<std::string>{"a", "b"});
    n->set_attribute("t", make_tensor({2}, {4, 5}));
    Tensor words({2}, DType::String);
    words.data_ptr<std::string>()[0] = "hello";
    words.data_ptr<std::string>()[1] = std::string("nul\0inside", 10);
    g->add_initializer("words", words);
    auto body = std::make_shared<Graph>("body");
    body->add_input(TensorInfo{"bx", DType::Float32, {std::nullopt}});
    body->add_initializer("bw", make_tensor({1}, {2}));
    body->add_node(make_node("Mul", "bm", {"bx", "bw"}, {"by"}));
    body->add_output(TensorInfo{"by", DType::Float32, {std::nullopt}});
    n->set_attribute("g", body);
    return g;
}

void expect_same_graph(const Graph& a, const Graph& b) {
    ASSERT_EQ(a.nodes().size(), b.nodes().size());
    for (size_t i = 0; i < a.nodes().size(); ++i) {
        EXPECT_EQ(a.nodes()[i]->name(), b.nodes()[i]->name());
        EXPECT_EQ(a.nodes()[i]->op_type(), b.nodes()[i]->op_type());
        EXPECT_EQ(a.nodes()[i]->inputs(), b.nodes()[i]->inputs());
        EXPECT_EQ(a.nodes()[i]->attribute_names(), b.nodes()[i]->attribute_names());
    }
    ASSERT_EQ(a.inputs().size(), b.inputs().size());
    for (size_t i = 0; i < a.inputs().size(); ++i) {
        EXPECT_EQ(a.inputs()[i].name, b.inputs()[i].name);
        EXPECT_EQ(a.inputs()[i].shape, b.inputs()[i].shape);
    }
    ASSERT_EQ(a.initializers().size(), b.initializers().size());
    for (const auto& [name, t] : a.initializers()) {
        const Tensor& u = b.get_initializer(name);
        EXPECT_EQ(t.shape(), u.shape());
        EXPECT_EQ(t.dtype(), u.dtype());
        if (t.dtype() == DType::String) {
            for (int64_t i = 0; i < t.num_elements(); ++i)
                EXPECT_EQ(t.data_ptr<std::string>()[i], u.data_ptr<std::string>()[i]) << name;
        } else {
            EXPECT_EQ(std::memcmp(t.data(), u.data(), t.size_bytes()), 0) << name;
        }
    }
}

}  // namespace

TEST(Pfm, RoundTripKeepsEverything) {
    TempDir dir;
    auto g = make_rich_graph();
    save_model(*g, dir.file("m.pfm"));
    EXPECT_TRUE(is_pfm_file(dir.file("m.pfm")));
    auto back = load_model(dir.file("m.pfm"));
    expect_same_graph(*g, *back);
    EXPECT_EQ(back->metadata().producer_name, "format_test");
    EXPECT_EQ(back->metadata().model_version, 7);
    EXPECT_EQ(back->metadata().custom_metadata.at("author"), "me");
    EXPECT_EQ(back->opset_version(""), 17);
    const Node& n = *back->nodes()[1];
    EXPECT_DOUBLE_EQ(n.get_attribute<double>("f"), 1.5);
    EXPECT_EQ(n.get_attribute<std::string>("s"), "text");
    EXPECT_EQ(n.get_attribute<std::vector<int64_t>>("ints"), (std::vector<int64_t>{1, -2, 3}));
    EXPECT_EQ(n.get_attribute<std::vector<double>>("floats"), (std::vector<double>{0.25, -0.5}));
    EXPECT_EQ(n.get_attribute<std::vector<std::string>>("strings"), (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(to_vector(n.get_attribute<Tensor>("t")), (std::vector<float>{4, 5}));
    auto body = n.get_attribute<std::shared_ptr<Graph>>("g");
    EXPECT_EQ(body->nodes()[0]->op_type(), "Mul");
    EXPECT_EQ(to_vector(body->get_initializer("bw")), (std::vector<float>{2}));
    // No temporary files are left behind.
    size_t files = 0;
    for (const auto& e : fs::directory_iterator(fs::path(dir.file("")))) files += e.path().filename() == "m.pfm" ? 0 : 1;
    EXPECT_EQ(files, 0u);
}

TEST(Pfm, ExternalDataRoundTripAndMapping) {
    TempDir dir;
    auto g = make_rich_graph();
    SaveOptions opts;
    opts.external_data_min_tensor_bytes = 8;
    opts.external_data_total_threshold = 0;
    save_model(*g, dir.file("m.pfm"), opts);
    ASSERT_TRUE(fs::exists(dir.file("m.pfm.data")));
    auto back = load_model(dir.file("m.pfm"));
    expect_same_graph(*g, *back);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(back->get_initializer("W").data()) % 64, 0u);

    auto data = read_bytes(dir.file("m.pfm.data"));
    data[data.size() / 2] ^= 0x10;
    write_bytes(dir.file("m.pfm.data"), data);
    EXPECT_THROW(load_model(dir.file("m.pfm")), InvalidModelError);
    fs::remove(dir.file("m.pfm.data"));
    EXPECT_THROW(load_model(dir.file("m.pfm")), InvalidModelError);
}

TEST(Pfm, ModelOverTwoGigabytes) {
    TempDir dir;
    Graph g("big");
    const int64_t n = (int64_t{1} << 31) + 4096;  // past protobuf's 2 GB message limit
    Tensor big({n}, DType::UInt8);
    auto* p = big.data_ptr<uint8_t>();
    for (int64_t i = 0; i < n; i += 4096) p[i] = static_cast<uint8_t>(i / 4096);
    g.add_input(TensorInfo{"x", DType::UInt8, {n}});
    g.add_initializer("big", big);
    g.add_node(make_node("Identity", "id", {"big"}, {"y"}));
    g.add_output(TensorInfo{"y", DType::UInt8, {n}});
    save_model(g, dir.file("big.pfm"));
    EXPECT_LT(fs::file_size(dir.file("big.pfm")), 1u << 20);  // weights went to big.pfm.data
    auto back = load_model(dir.file("big.pfm"));
    const Tensor& t = back->get_initializer("big");
    ASSERT_EQ(t.num_elements(), n);
    for (int64_t i = 0; i < n; i += 4096 * 1024) ASSERT_EQ(t.data_ptr<uint8_t>()[i], p[i]);
    EXPECT_EQ(t.data_ptr<uint8_t>()[n - 4096], p[n - 4096]);
}

TEST(Pfm, TruncatedFilesRaiseInvalidModel) {
    TempDir dir;
    save_model(*make_rich_graph(), dir.file("m.pfm"));
    const auto bytes = read_bytes(dir.file("m.pfm"));
    for (size_t len = 0; len < bytes.size(); len += std::max<size_t>(1, bytes.size() / 97)) {
        write_bytes(dir.file("t.pfm"), std::vector<char>(bytes.begin(), bytes.begin() + len));
        EXPECT_THROW(load_model(dir.file("t.pfm")), InvalidModelError) << "length " << len;
    }
}

TEST(Pfm, EveryBitFlipIsDetected) {
    TempDir dir;
    save_model(*make_rich_graph(), dir.file("m.pfm"));
    const auto bytes = read_bytes(dir.file("m.pfm"));
    for (size_t pos = 0; pos < bytes.size(); pos += (pos < 64 ? 1 : 7)) {
        auto flipped = bytes;
        flipped[pos] ^= static_cast<char>(1 << (pos % 8));
        write_bytes(dir.file("f.pfm"), flipped);
        EXPECT_THROW(load_model(dir.file("f.pfm")), InvalidModelError) << "byte " << pos;
    }
}

TEST(Pfm, ForeignAndMissingFiles) {
    TempDir dir;
    write_bytes(dir.file("text.pfm"), {'h', 'e', 'l', 'l', 'o'});
    EXPECT_THROW(load_model(dir.file("text.pfm")), InvalidModelError);
    EXPECT_THROW(load_model(std::string(PYFLAME_EXAMPLES_DIR) + "/models/small_cnn.onnx"), InvalidModelError);
    EXPECT_THROW(load_model(dir.file("missing.pfm")), FileNotFoundError);
    EXPECT_FALSE(is_pfm_file(dir.file("missing.pfm")));
}

TEST(Pfm, SaveReplacesAtomically) {
    TempDir dir;
    auto g = make_rich_graph();
    save_model(*g, dir.file("m.pfm"));
    g->metadata().producer_name = "second";
    save_model(*g, dir.file("m.pfm"));
    EXPECT_EQ(load_model(dir.file("m.pfm"))->metadata().producer_name, "second");
    // A save that cannot write leaves the old file untouched.
    EXPECT_THROW(save_model(*g, dir.file("no/such/dir/m.pfm")), PyFlameRTError);
    EXPECT_EQ(load_model(dir.file("m.pfm"))->metadata().producer_name, "second");
}
