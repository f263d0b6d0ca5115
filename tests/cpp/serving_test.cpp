// The model server's C++ pieces: config parsing, the registry, dynamic batching, metrics.
// Model outputs are checked against plain-loop references (test_util.hpp's mlp_reference).
#include <chrono>
#include <filesystem>
#include <future>
#include <random>
#include <thread>

#include "pyflame_rt/serving/config.hpp"
#include "pyflame_rt/serving/metrics.hpp"
#include "pyflame_rt/serving/model_instance.hpp"
#include "pyflame_rt/serving/model_registry.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace pyflame_rt;
using namespace pyflame_rt::serving;
using pyflame_rt::testing::TempDir;

namespace {

// The test MLP (inputs x [N,4], x2 [N,3]; output y [N,3]) saved as DIR/NAME/VERSION/model.pfm.
std::string write_mlp(const std::string& repo, const std::string& name, const std::string& version) {
    const fs::path dir = fs::path(repo) / name / version;
    fs::create_directories(dir);
    const std::string path = (dir / "model.pfm").string();
    save_model(*pyflame_rt::testing::make_mlp_graph(), path);
    return path;
}

InferRequest mlp_request(int64_t rows, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-2.f, 2.f);
    Tensor x({rows, 4}, DType::Float32), x2({rows, 3}, DType::Float32);
    for (int64_t i = 0; i < x.num_elements(); ++i) x.data_ptr<float>()[i] = dist(rng);
    for (int64_t i = 0; i < x2.num_elements(); ++i) x2.data_ptr<float>()[i] = dist(rng);
    InferRequest request;
    request.inputs = {{"x", x}, {"x2", x2}};
    return request;
}

void expect_mlp_output(const InferRequest& request, const InferResponse& response) {
    ASSERT_TRUE(response.success) << response.error_message;
    const Tensor& x = request.inputs.at("x");
    const auto expected = pyflame_rt::testing::mlp_reference(pyflame_rt::testing::to_vector(x),
                                                             pyflame_rt::testing::to_vector(request.inputs.at("x2")),
                                                             x.shape()[0]);
    const auto actual = pyflame_rt::testing::to_vector(response.outputs.at("y"));
    ASSERT_EQ(actual.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5f);
}

ModelConfig batched_config(const std::string& path) {
    ModelConfig config;
    config.name = "mlp";
    config.model_path = path;
    config.enable_batching = true;
    config.max_batch_size = 8;
    config.batch_timeout_us = 2000;
    config.warmup_requests = 1;
    return config;
}

}  // namespace

TEST(ServingConfig, ParsesJsonAndYamlAndRejectsUnknownKeys) {
    const auto json_config = parse_server_config(
        R"({"http": {"port": 8000, "max_request_size": "1MB"}, "max_memory": 2048,
            "models": [{"name": "m", "model_path": "/m.pfm", "version": 7, "preferred_batch_sizes": [2, 4]}]})",
        false);
    EXPECT_EQ(json_config.http.port, 8000);
    EXPECT_EQ(json_config.http.max_request_size, 1u << 20);
    EXPECT_EQ(json_config.max_memory, 2048u);
    ASSERT_EQ(json_config.models.size(), 1u);
    EXPECT_EQ(json_config.models[0].version, "7");
    EXPECT_EQ(json_config.models[0].preferred_batch_sizes, (std::vector<size_t>{2, 4}));
    EXPECT_EQ(json_config.grpc.port, 9090);  // defaults of the reference stay
    EXPECT_EQ(json_config.metrics_port, 9091);

    const auto yaml_config = parse_server_config("grpc:\n  port: 0\nrate_limit:\n  enabled: true\n  requests_per_second: 2.5\n", true);
    EXPECT_EQ(yaml_config.grpc.port, 0);
    EXPECT_TRUE(yaml_config.rate_limit.enabled);
    EXPECT_DOUBLE_EQ(yaml_config.rate_limit.requests_per_second, 2.5);

    pyflame_rt::testing::expect_validation_error([] { parse_server_config(R"({"http": {"prot": 1}})", false); },
                                                 {"config.http", "unknown key 'prot'"});
    pyflame_rt::testing::expect_validation_error([] { parse_server_config(R"({"http": {"port": 70000}})", false); },
                                                 {"config.http.port"});
    pyflame_rt::testing::expect_validation_error([] { parse_model_config(R"({"max_batch_size": 4, "preferred_batch_sizes": [8]})", false); },
                                                 {"preferred_batch_sizes"});
    pyflame_rt::testing::expect_validation_error([] { parse_server_config("{", false); }, {"invalid JSON"});
    EXPECT_EQ(parse_byte_size("3GB"), size_t{3} << 30);
    EXPECT_EQ(parse_byte_size("512"), 512u);
    pyflame_rt::testing::expect_validation_error([] { parse_byte_size("12XB"); }, {"unit"});

    ModelConfig base;
    base.max_batch_size = 4;
    const auto merged = merge_model_config(base, R"({"enable_batching": true})");
    EXPECT_TRUE(merged.enable_batching);
    EXPECT_EQ(merged.max_batch_size, 4u);
}

TEST(ServingRegistry, VersionsLatestRoutingAndUnload) {
    TempDir dir;
    const std::string repo = dir.file("repo");
    for (const char* version : {"1", "2", "10"}) write_mlp(repo, "mlp", version);
    fs::create_directories(fs::path(repo) / ".hidden" / "1");
    ModelRegistry registry;
    registry.load_from_directory(repo);
    EXPECT_EQ(registry.list_models(), std::vector<std::string>{"mlp"});
    EXPECT_EQ(registry.get_latest("mlp")->version(), "10");  // numeric, not lexicographic
    EXPECT_EQ(registry.get("mlp", "2")->version(), "2");
    ASSERT_EQ(registry.list_versions("mlp").size(), 3u);
    EXPECT_TRUE(registry.all_ready());
    try {
        registry.get("nope");
        ADD_FAILURE() << "expected ModelNotFound";
    } catch (const ServingError& error) {
        EXPECT_EQ(error.code(), ServingErrorCode::ModelNotFound);
    }
    auto held = registry.get("mlp", "10");
    const InferRequest request = mlp_request(2, 1);
    expect_mlp_output(request, held->infer(request));
    registry.unload("mlp", "10");
    EXPECT_EQ(registry.get_latest("mlp")->version(), "2");
    // An unloaded version refuses new work (its holders may still be finishing).
    EXPECT_EQ(held->infer(request).error_code, ServingErrorCode::ModelNotReady);
    registry.unload_all("mlp");
    EXPECT_FALSE(registry.has("mlp"));
    EXPECT_EQ(registry.memory_used(), 0u);
}

TEST(ServingRegistry, MaxMemoryRefusesALoadAndKeepsServing) {
    TempDir dir;
    const std::string path = write_mlp(dir.file("repo"), "mlp", "1");
    ModelRegistry probe;
    probe.load_from_path("mlp", path);
    const size_t one_model = probe.memory_used();
    ASSERT_GT(one_model, 0u);

    ModelRegistry registry(one_model + one_model / 2);
    registry.load_from_path("a", path);
    try {
        registry.load_from_path("b", path);
        ADD_FAILURE() << "expected the load to be refused";
    } catch (const ServingError& error) {
        EXPECT_NE(std::string(error.what()).find("max_memory"), std::string::npos) << error.what();
    }
    EXPECT_FALSE(registry.has("b"));
    EXPECT_EQ(registry.memory_used(), one_model);
    const InferRequest request = mlp_request(3, 2);
    expect_mlp_output(request, registry.get("a")->infer(request));
    EXPECT_EQ(registry.get_stats().failed_loads, 1u);
}

TEST(ServingRegistry, SafeNamesAndPolling) {
    for (const char* bad : {"", ".", "..", "../x", "a/b", ".hidden", "a\\b", "a b"}) EXPECT_FALSE(is_safe_model_name(bad)) << bad;
    for (const char* good : {"resnet-18", "mlp_v2", "1", "a.b"}) EXPECT_TRUE(is_safe_model_name(good)) << good;
    TempDir dir;
    const std::string repo = dir.file("repo");
    write_mlp(repo, "mlp", "1");
    ModelRegistry registry;
    registry.load_from_directory(repo);
    write_mlp(repo, "mlp", "2");
    write_mlp(repo, "other", "1");
    // In the repository but not loaded yet (as while the server starts): not ready, worth a
    // retry; a name the repository lacks is unknown.
    auto code_of = [&](const std::string& name) {
        try {
            registry.get(name);
        } catch (const ServingError& e) {
            return e.code();
        }
        return ServingErrorCode::OK;
    };
    EXPECT_EQ(code_of("other"), ServingErrorCode::ModelNotReady);
    EXPECT_EQ(code_of("nope"), ServingErrorCode::ModelNotFound);
    registry.poll_repository();
    EXPECT_TRUE(registry.has("mlp", "2"));
    EXPECT_TRUE(registry.has("other", "1"));
    fs::remove_all(fs::path(repo) / "mlp" / "2");
    registry.poll_repository();
    EXPECT_FALSE(registry.has("mlp", "2"));
    registry.unload_repository_model("other");
    registry.poll_repository();  // an explicit unload is not undone by the poller
    EXPECT_FALSE(registry.has("other"));
    registry.load_repository_model("other");
    EXPECT_TRUE(registry.has("other"));
}

TEST(ServingBatching, ConcurrentRequestsAreMergedAndSplitExactly) {
    TempDir dir;
    ModelInstance instance(batched_config(write_mlp(dir.file("repo"), "mlp", "1")));
    ASSERT_TRUE(instance.batching_active());
    std::vector<InferRequest> requests;
    std::vector<std::future<InferResponse>> futures;
    int64_t total_rows = 0;
    for (uint32_t i = 0; i < 40; ++i) {
        requests.push_back(mlp_request(1 + i % 3, i));
        total_rows += 1 + i % 3;
    }
    for (const auto& request : requests) futures.push_back(instance.infer_async(request));
    for (size_t i = 0; i < requests.size(); ++i) expect_mlp_output(requests[i], futures[i].get());
    const ModelStats stats = instance.get_stats();
    EXPECT_EQ(stats.successful_requests, requests.size());
    EXPECT_EQ(stats.inference_count, static_cast<uint64_t>(total_rows));
    EXPECT_LE(stats.execution_count, requests.size());
    EXPECT_LE(stats.p50_latency_ms, stats.p99_latency_ms);
}

TEST(ServingBatching, ValidationQueueFullAndPriority) {
    TempDir dir;
    ModelConfig config = batched_config(write_mlp(dir.file("repo"), "mlp", "1"));
    config.max_batch_size = 4;
    config.batch_timeout_us = 2000000;  // long enough that both requests are queued together
    config.max_queue_size = 2;
    ModelInstance instance(config);

    InferRequest wrong = mlp_request(1, 0);
    wrong.inputs["x"] = Tensor({1, 4}, DType::Int64);
    auto response = instance.infer(wrong);
    EXPECT_EQ(response.error_code, ServingErrorCode::InvalidRequest);
    EXPECT_NE(response.error_message.find("datatype"), std::string::npos);
    EXPECT_EQ(instance.infer(mlp_request(5, 0)).error_code, ServingErrorCode::InvalidRequest);  // > max_batch_size

    // Low (3 rows) then high priority (2 rows): they do not fit one batch of 4, so the high
    // priority request leaves the queue first although it came second.
    InferRequest low = mlp_request(3, 1), high = mlp_request(2, 2);
    high.priority = 5;
    auto low_future = instance.infer_async(low);
    auto high_future = instance.infer_async(high);
    EXPECT_EQ(instance.infer(mlp_request(1, 3)).error_code, ServingErrorCode::QueueFull);
    const InferResponse high_response = high_future.get(), low_response = low_future.get();
    expect_mlp_output(high, high_response);
    expect_mlp_output(low, low_response);
    const auto dispatched = [](const InferRequest& request, const InferResponse& response) {
        return request.arrival_time + std::chrono::microseconds(response.queue_time_us);
    };
    EXPECT_LT(dispatched(high, high_response), dispatched(low, low_response));

    InferRequest hurried = mlp_request(1, 4);
    hurried.timeout_us = 1000;
    EXPECT_EQ(instance.infer(hurried).error_code, ServingErrorCode::Timeout);
}

TEST(ServingBatching, PreferredBatchSizeDispatchesWithoutWaiting) {
    TempDir dir;
    ModelConfig config = batched_config(write_mlp(dir.file("repo"), "mlp", "1"));
    config.preferred_batch_sizes = {2};
    config.batch_timeout_us = 1000000;
    ModelInstance instance(config);
    std::vector<InferRequest> requests = {mlp_request(1, 10), mlp_request(1, 11), mlp_request(1, 12)};
    std::vector<std::future<InferResponse>> futures;
    for (const auto& request : requests) futures.push_back(instance.infer_async(request));
    std::vector<InferResponse> responses;
    for (size_t i = 0; i < requests.size(); ++i) {
        responses.push_back(futures[i].get());
        expect_mlp_output(requests[i], responses.back());
    }
    // The first two form a preferred batch at once; the third waits out the batch window alone.
    const ModelStats stats = instance.get_stats();
    EXPECT_EQ(stats.execution_count, 2u);
    EXPECT_EQ(stats.inference_count, 3u);
    EXPECT_LT(responses[1].queue_time_us, responses[2].queue_time_us);
}

TEST(ServingMetrics, CountersGaugesHistogramsExport) {
    auto& registry = MetricsRegistry::instance();
    metrics::request_total("metrics_test_model", "success");
    metrics::request_total("metrics_test_model", "success");
    metrics::request_latency("metrics_test_model", 0.004);
    metrics::queue_size("metrics_test_model", 3);
    registry.counter_inc("custom_total", {{"kind", "a"}}, 2.0);
    const std::string text = registry.export_prometheus();
    EXPECT_NE(text.find("pyflame_request_total{model=\"metrics_test_model\",status=\"success\"} 2"), std::string::npos) << text;
    EXPECT_NE(text.find("pyflame_queue_size{model=\"metrics_test_model\"} 3"), std::string::npos);
    EXPECT_NE(text.find("pyflame_request_latency_seconds_bucket{model=\"metrics_test_model\",le=\"0.005\"} 1"), std::string::npos);
    EXPECT_NE(text.find("custom_total{kind=\"a\"} 2"), std::string::npos);
    EXPECT_THROW(registry.gauge_set("custom_total", 1.0), ValidationError);
}

#include "protocol.hpp"  // serving/src: the KServe tensor codecs

TEST(ServingProtocol, TensorCodecsRoundTripAndRejectMalformedData) {
    using nlohmann::json;
    const Tensor nested = protocol::tensor_from_json(json::parse("[[1, 2, 3], [4, 5, 6]]"), DType::Int32, {2, 3}, "t");
    EXPECT_EQ(nested.shape(), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(nested.data_ptr<int32_t>()[5], 6);
    EXPECT_EQ(protocol::tensor_to_json(nested), json::parse("[1, 2, 3, 4, 5, 6]"));

    const Tensor strings = protocol::tensor_from_json(json::parse(R"(["ab", "", "c"])"), DType::String, {3}, "s");
    const std::string raw = protocol::tensor_to_raw(strings);
    EXPECT_EQ(raw, std::string("\x02\0\0\0ab\0\0\0\0\x01\0\0\0c", 15));
    const Tensor decoded = protocol::tensor_from_raw(raw.data(), raw.size(), DType::String, {3}, "s");
    EXPECT_EQ(decoded.data_ptr<std::string>()[0], "ab");
    EXPECT_EQ(decoded.data_ptr<std::string>()[2], "c");

    const float values[2] = {1.5f, -2.0f};
    const Tensor floats = protocol::tensor_from_raw(reinterpret_cast<const char*>(values), 8, DType::Float32, {2}, "f");
    EXPECT_EQ(floats.data_ptr<float>()[1], -2.0f);

    auto expect_invalid = [](auto&& fn, const std::string& needle) {
        try {
            fn();
            ADD_FAILURE() << "expected InvalidRequest containing " << needle;
        } catch (const ServingError& error) {
            EXPECT_EQ(error.code(), ServingErrorCode::InvalidRequest);
            EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
        }
    };
    expect_invalid([] { protocol::tensor_from_json(json::parse("[1, 2]"), DType::Int32, {3}, "t"); }, "needs 3 elements");
    expect_invalid([] { protocol::tensor_from_json(json::parse("[1.5]"), DType::Int32, {1}, "t"); }, "integer");
    expect_invalid([] { protocol::tensor_from_json(json::parse("[300]"), DType::UInt8, {1}, "t"); }, "out of range");
    expect_invalid([] { protocol::tensor_from_raw("abc", 3, DType::Float32, {1}, "t"); }, "needs 4 bytes");
    expect_invalid([] { protocol::tensor_from_raw("\x09\0\0\0ab", 6, DType::String, {1}, "t"); }, "overruns");
    expect_invalid([] { protocol::parse_shape(json::parse("[1, -2]"), "t"); }, "negative");
    expect_invalid([] { dtype_from_kserve("FP8"); }, "unknown datatype");
}
