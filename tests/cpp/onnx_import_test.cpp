#include <gtest/gtest.h>

#include "test_util.hpp"

using namespace pyflame_rt;
using namespace pyflame_rt::testing;

namespace {
const std::string kModel = std::string(PYFLAME_EXAMPLES_DIR) + "/models/small_cnn.onnx";
const std::string kData = PYFLAME_TEST_DATA_DIR;
}  // namespace

TEST(OnnxImport, ImportsDemoCnn) {
    ONNXImporter importer;
    EXPECT_TRUE(importer.supports(kModel));
    auto result = importer.import_model(kModel);
    ASSERT_TRUE(result.success) << result.error;
    EXPECT_EQ(result.stats.node_count, 16u);
    EXPECT_GT(result.stats.parameter_count, 30000u);
    EXPECT_GE(result.stats.import_time_ms, 0.0);
    EXPECT_EQ(result.graph->inputs()[0].shape, (Shape{std::nullopt, 3, 32, 32}));
    EXPECT_EQ(result.graph->opset_version(""), 17);
    EXPECT_EQ(result.graph->metadata().producer_name, "pytorch");
    const auto opsets = importer.supported_opsets();
    EXPECT_EQ(opsets.front(), 1);
    EXPECT_GE(opsets.back(), 21);
}

TEST(OnnxImport, SessionMatchesOnnxRuntimeReference) {
    // tests/data/*.f32 hold ONNX Runtime's output for a fixed input (make_reference.py).
    const auto input = read_f32(kData + "/small_cnn_input_2x3x32x32.f32");
    const auto expected = read_f32(kData + "/small_cnn_ort_output_2x10.f32");
    ASSERT_EQ(input.size(), 2u * 3 * 32 * 32);
    for (const std::string path : {kModel, std::string("pfm")}) {
        std::unique_ptr<InferenceSession> session;
        TempDir dir;
        if (path == "pfm") {
            auto graph = ImporterRegistry::instance().import_model(kModel).graph;
            save_model(*graph, dir.file("cnn.pfm"));
            session = std::make_unique<InferenceSession>(dir.file("cnn.pfm"));
        } else {
            session = std::make_unique<InferenceSession>(path);
        }
        auto out = session->run({}, {{"input", make_tensor({2, 3, 32, 32}, input)}});
        ASSERT_EQ(out[0].shape(), (std::vector<int64_t>{2, 10}));
        const auto got = to_vector(out[0]);
        for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-5 + 1e-4 * std::fabs(expected[i]));
    }
}

TEST(OnnxImport, CorruptFilesFailCleanly) {
    TempDir dir;
    auto bytes = read_bytes(kModel);
    write_bytes(dir.file("trunc.onnx"), std::vector<char>(bytes.begin(), bytes.begin() + bytes.size() / 3));
    ONNXImporter importer;
    auto r = importer.import_model(dir.file("trunc.onnx"));
    EXPECT_FALSE(r.success);
    EXPECT_FALSE(r.error.empty());
    EXPECT_EQ(r.graph, nullptr);
    EXPECT_THROW(InferenceSession s(dir.file("trunc.onnx")), InvalidModelError);
    write_bytes(dir.file("junk.onnx"), {'n', 'o', 't', ' ', 'o', 'n', 'n', 'x'});
    EXPECT_THROW(InferenceSession s(dir.file("junk.onnx")), InvalidModelError);
    EXPECT_THROW(importer.import_model(dir.file("missing.onnx")), FileNotFoundError);
    EXPECT_EQ(ImporterRegistry::instance().list_importers(), (std::vector<std::string>{"onnx"}));
}
