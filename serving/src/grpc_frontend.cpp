// gRPC front end: inference.GRPCInferenceService (KServe v2 plus the Triton extensions that
// tritonclient.grpc calls). Documents shared with HTTP are built as JSON and converted.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "frontends.hpp"
#include "grpc_service.grpc.pb.h"
#include "protocol.hpp"
#include "pyflame_rt/errors.hpp"

namespace pyflame_rt::serving {

using nlohmann::json;

namespace {

grpc::StatusCode grpc_code_of(ServingErrorCode code) {
    switch (code) {
        case ServingErrorCode::OK: return grpc::StatusCode::OK;
        case ServingErrorCode::InvalidRequest: return grpc::StatusCode::INVALID_ARGUMENT;
        case ServingErrorCode::ModelNotFound: return grpc::StatusCode::NOT_FOUND;
        case ServingErrorCode::ModelNotReady: return grpc::StatusCode::UNAVAILABLE;
        case ServingErrorCode::InferenceError: return grpc::StatusCode::INTERNAL;
        case ServingErrorCode::Timeout: return grpc::StatusCode::DEADLINE_EXCEEDED;
        case ServingErrorCode::QueueFull: return grpc::StatusCode::UNAVAILABLE;
        case ServingErrorCode::InternalError: return grpc::StatusCode::INTERNAL;
    }
    return grpc::StatusCode::INTERNAL;
}

[[noreturn]] void invalid(const std::string& message) { throw ServingError(ServingErrorCode::InvalidRequest, message); }

template <typename Message>
void json_to_message(const json& document, Message* message) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    const auto status = google::protobuf::util::JsonStringToMessage(document.dump(), message, options);
    if (!status.ok()) throw PyFlameRTError("cannot convert to protobuf: " + std::string(status.message()));
}

bool integer_parameter(const google::protobuf::Map<std::string, inference::InferParameter>& parameters, const char* key,
                       int64_t& out) {
    auto it = parameters.find(key);
    if (it == parameters.end()) return false;
    const auto& p = it->second;
    switch (p.parameter_choice_case()) {
        case inference::InferParameter::kInt64Param: out = p.int64_param(); return true;
        case inference::InferParameter::kUint64Param: out = static_cast<int64_t>(p.uint64_param()); return true;
        default: invalid(std::string("parameter '") + key + "' must be an integer");
    }
}

template <typename Field, typename T>
void copy_contents(const Field& field, Tensor& tensor, const std::string& name) {
    if (static_cast<int64_t>(field.size()) != tensor.num_elements())
        invalid("input '" + name + "': shape " + shape_to_string(tensor.shape()) + " needs " +
                std::to_string(tensor.num_elements()) + " elements, contents has " + std::to_string(field.size()));
    T* out = tensor.data_ptr<T>();
    for (int i = 0; i < field.size(); ++i) out[i] = static_cast<T>(field.Get(i));
}

int64_t contents_size(const inference::InferTensorContents& c, DType dtype) {
    switch (dtype) {
        case DType::Bool: return c.bool_contents_size();
        case DType::Int8: case DType::Int16: case DType::Int32: return c.int_contents_size();
        case DType::Int64: return c.int64_contents_size();
        case DType::UInt8: case DType::UInt16: case DType::UInt32: return c.uint_contents_size();
        case DType::UInt64: return c.uint64_contents_size();
        case DType::Float32: return c.fp32_contents_size();
        case DType::Float64: return c.fp64_contents_size();
        case DType::String: return c.bytes_contents_size();
        default: return -1;
    }
}

Tensor tensor_from_contents(const inference::InferTensorContents& c, DType dtype, const std::vector<int64_t>& shape,
                            const std::string& name) {
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;  // parse_shape has bounded it
    const int64_t provided = contents_size(c, dtype);
    if (provided < 0) invalid("input '" + name + "': " + kserve_datatype(dtype) + " needs raw_input_contents");
    // Checked before allocating, so a huge shape with little data costs nothing.
    if (provided != count)
        invalid("input '" + name + "': shape " + shape_to_string(shape) + " needs " + std::to_string(count) +
                " elements, contents has " + std::to_string(provided));
    Tensor tensor(shape, dtype);
    switch (dtype) {
        case DType::Bool: copy_contents<decltype(c.bool_contents()), bool>(c.bool_contents(), tensor, name); break;
        case DType::Int8: copy_contents<decltype(c.int_contents()), int8_t>(c.int_contents(), tensor, name); break;
        case DType::Int16: copy_contents<decltype(c.int_contents()), int16_t>(c.int_contents(), tensor, name); break;
        case DType::Int32: copy_contents<decltype(c.int_contents()), int32_t>(c.int_contents(), tensor, name); break;
        case DType::Int64: copy_contents<decltype(c.int64_contents()), int64_t>(c.int64_contents(), tensor, name); break;
        case DType::UInt8: copy_contents<decltype(c.uint_contents()), uint8_t>(c.uint_contents(), tensor, name); break;
        case DType::UInt16: copy_contents<decltype(c.uint_contents()), uint16_t>(c.uint_contents(), tensor, name); break;
        case DType::UInt32: copy_contents<decltype(c.uint_contents()), uint32_t>(c.uint_contents(), tensor, name); break;
        case DType::UInt64: copy_contents<decltype(c.uint64_contents()), uint64_t>(c.uint64_contents(), tensor, name); break;
        case DType::Float32: copy_contents<decltype(c.fp32_contents()), float>(c.fp32_contents(), tensor, name); break;
        case DType::Float64: copy_contents<decltype(c.fp64_contents()), double>(c.fp64_contents(), tensor, name); break;
        case DType::String: {
            if (c.bytes_contents_size() != count) invalid("input '" + name + "': wrong number of BYTES elements");
            auto* out = tensor.data_ptr<std::string>();
            for (int i = 0; i < c.bytes_contents_size(); ++i) out[i] = c.bytes_contents(i);
            break;
        }
        default: invalid("input '" + name + "': " + kserve_datatype(dtype) + " needs raw_input_contents");
    }
    return tensor;
}

}  // namespace

class InferenceService final : public inference::GRPCInferenceService::Service {
public:
    explicit InferenceService(ServerCore& core) : core_(core) {}

    template <typename Fn>
    grpc::Status guarded(Fn&& fn) {
        try {
            return fn();
        } catch (const ServingError& error) {
            return grpc::Status(grpc_code_of(error.code()), error.what());
        } catch (const ValidationError& error) {
            return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error.what());
        } catch (const std::exception& error) {
            core_.report_error(error.what());
            return grpc::Status(grpc::StatusCode::INTERNAL, std::string("internal error: ") + error.what());
        }
    }

    std::shared_ptr<ModelInstance> lookup(const std::string& name, const std::string& version) {
        if (!is_safe_model_name(name)) invalid("invalid model name '" + name + "'");
        if (!version.empty() && !is_safe_model_name(version)) invalid("invalid model version '" + version + "'");
        return core_.registry.get(name, version);
    }

    grpc::Status admin(grpc::ServerContext* context) {
        std::string authorization;
        const auto& metadata = context->client_metadata();
        auto it = metadata.find("authorization");
        if (it != metadata.end()) authorization.assign(it->second.data(), it->second.size());
        switch (core_.check_admin(authorization)) {
            case AdminCheck::Allowed: return grpc::Status::OK;
            case AdminCheck::Missing:
                return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "this RPC needs the admin token: metadata authorization: Bearer <token>");
            case AdminCheck::Wrong: return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "wrong admin token");
        }
        return grpc::Status(grpc::StatusCode::INTERNAL, "admin check");
    }

    grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*, inference::ServerLiveResponse* response) override {
        response->set_live(true);
        return grpc::Status::OK;
    }
    grpc::Status ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*, inference::ServerReadyResponse* response) override {
        response->set_ready(core_.ready());
        return grpc::Status::OK;
    }
    grpc::Status ModelReady(grpc::ServerContext*, const inference::ModelReadyRequest* request, inference::ModelReadyResponse* response) override {
        return guarded([&] {
            auto instance = lookup(request->name(), request->version());
            response->set_ready(instance->is_ready() && core_.accepting);
            return grpc::Status::OK;
        });
    }
    grpc::Status ServerMetadata(grpc::ServerContext*, const inference::ServerMetadataRequest*, inference::ServerMetadataResponse* response) override {
        return guarded([&] {
            json_to_message(protocol::server_metadata_json(), response);
            return grpc::Status::OK;
        });
    }
    grpc::Status ModelMetadata(grpc::ServerContext*, const inference::ModelMetadataRequest* request, inference::ModelMetadataResponse* response) override {
        return guarded([&] {
            auto instance = lookup(request->name(), request->version());
            json_to_message(protocol::model_metadata_json(*instance, core_.registry.loaded_versions(instance->name())), response);
            return grpc::Status::OK;
        });
    }
    grpc::Status ModelConfig(grpc::ServerContext*, const inference::ModelConfigRequest* request, inference::ModelConfigResponse* response) override {
        return guarded([&] {
            json_to_message(protocol::model_config_json(*lookup(request->name(), request->version())), response->mutable_config());
            return grpc::Status::OK;
        });
    }
    grpc::Status ModelStatistics(grpc::ServerContext*, const inference::ModelStatisticsRequest* request,
                                 inference::ModelStatisticsResponse* response) override {
        return guarded([&] {
            json stats = json::array();
            std::vector<std::string> names;
            if (request->name().empty()) names = core_.registry.list_models();
            else {
                lookup(request->name(), request->version());
                names.push_back(request->name());
            }
            for (const auto& name : names)
                for (const auto& version : core_.registry.loaded_versions(name))
                    if ((request->version().empty() || version == request->version()) && core_.registry.has(name, version))
                        stats.push_back(protocol::model_stats_json(*core_.registry.get(name, version)));
            json_to_message(json{{"model_stats", stats}}, response);
            return grpc::Status::OK;
        });
    }
    grpc::Status RepositoryIndex(grpc::ServerContext*, const inference::RepositoryIndexRequest* request,
                                 inference::RepositoryIndexResponse* response) override {
        return guarded([&] {
            for (const auto& entry : core_.registry.repository_index()) {
                if (request->ready() && entry.state != "READY") continue;
                auto* model = response->add_models();
                model->set_name(entry.name);
                model->set_version(entry.version);
                model->set_state(entry.state);
                model->set_reason(entry.reason);
            }
            return grpc::Status::OK;
        });
    }
    grpc::Status RepositoryModelLoad(grpc::ServerContext* context, const inference::RepositoryModelLoadRequest* request,
                                     inference::RepositoryModelLoadResponse*) override {
        if (auto status = admin(context); !status.ok()) return status;
        return guarded([&] {
            std::string override_json;
            auto it = request->parameters().find("config");
            if (it != request->parameters().end()) {
                if (it->second.parameter_choice_case() != inference::ModelRepositoryParameter::kStringParam)
                    invalid("parameter 'config' must be a JSON string");
                override_json = protocol::load_config_override(it->second.string_param());
            }
            core_.registry.load_repository_model(request->model_name(), override_json);
            return grpc::Status::OK;
        });
    }
    grpc::Status RepositoryModelUnload(grpc::ServerContext* context, const inference::RepositoryModelUnloadRequest* request,
                                       inference::RepositoryModelUnloadResponse*) override {
        if (auto status = admin(context); !status.ok()) return status;
        return guarded([&] {
            if (!is_safe_model_name(request->model_name())) invalid("invalid model name '" + request->model_name() + "'");
            core_.registry.unload_repository_model(request->model_name());
            return grpc::Status::OK;
        });
    }

    // Builds the InferRequest; throws ServingError for malformed input.
    InferRequest to_request(const inference::ModelInferRequest& message) {
        if (!is_safe_model_name(message.model_name())) invalid("invalid model name '" + message.model_name() + "'");
        if (!message.model_version().empty() && !is_safe_model_name(message.model_version()))
            invalid("invalid model version '" + message.model_version() + "'");
        InferRequest request;
        request.model_name = message.model_name();
        request.model_version = message.model_version();
        request.request_id = message.id().empty() ? InferRequest::generate_id() : message.id();
        int64_t value;
        if (integer_parameter(message.parameters(), "priority", value)) request.priority = static_cast<int>(value);
        if (integer_parameter(message.parameters(), "timeout", value)) {
            if (value < 0) invalid("parameter 'timeout' must not be negative");
            request.timeout_us = value;
        }
        const bool raw = message.raw_input_contents_size() > 0;
        if (raw && message.raw_input_contents_size() != message.inputs_size())
            invalid("raw_input_contents has " + std::to_string(message.raw_input_contents_size()) + " entries for " +
                    std::to_string(message.inputs_size()) + " inputs");
        for (int i = 0; i < message.inputs_size(); ++i) {
            const auto& input = message.inputs(i);
            if (request.inputs.count(input.name())) invalid("input '" + input.name() + "' given twice");
            const std::vector<int64_t> shape(input.shape().begin(), input.shape().end());
            json shape_json = shape;
            protocol::parse_shape(shape_json, input.name());
            const DType dtype = dtype_from_kserve(input.datatype());
            if (raw) {
                const std::string& bytes = message.raw_input_contents(i);
                request.inputs[input.name()] = protocol::tensor_from_raw(bytes.data(), bytes.size(), dtype, shape, input.name());
            } else {
                request.inputs[input.name()] = tensor_from_contents(input.contents(), dtype, shape, input.name());
            }
        }
        for (const auto& output : message.outputs()) request.output_names.push_back(output.name());
        return request;
    }

    void to_message(const InferResponse& response, inference::ModelInferResponse* message) {
        message->set_model_name(response.model_name);
        message->set_model_version(response.model_version);
        message->set_id(response.request_id);
        for (const auto& name : response.output_order) {
            const Tensor& tensor = response.outputs.at(name);
            auto* output = message->add_outputs();
            output->set_name(name);
            output->set_datatype(kserve_datatype(tensor.dtype()));
            for (int64_t dim : tensor.shape()) output->add_shape(dim);
            message->add_raw_output_contents(protocol::tensor_to_raw(tensor));
        }
    }

    grpc::Status infer_one(const inference::ModelInferRequest& in, inference::ModelInferResponse* out) {
        if (!core_.admit()) return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "rate limit exceeded");
        return guarded([&] {
            InferRequest request = to_request(in);
            InferResponse response = core_.infer(request);
            if (!response.success) return grpc::Status(grpc_code_of(response.error_code), response.error_message);
            to_message(response, out);
            return grpc::Status::OK;
        });
    }

    grpc::Status ModelInfer(grpc::ServerContext*, const inference::ModelInferRequest* request,
                            inference::ModelInferResponse* response) override {
        return infer_one(*request, response);
    }

    grpc::Status ModelStreamInfer(grpc::ServerContext*,
                                  grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>* stream) override {
        inference::ModelInferRequest request;
        while (stream->Read(&request)) {
            inference::ModelStreamInferResponse reply;
            const grpc::Status status = infer_one(request, reply.mutable_infer_response());
            if (!status.ok()) {
                reply.clear_infer_response();
                reply.set_error_message(status.error_message());
                reply.mutable_infer_response()->set_id(request.id());
            }
            if (!stream->Write(reply)) break;
        }
        return grpc::Status::OK;
    }

#define PYFLAME_UNIMPLEMENTED(Rpc)                                                                                   \
    grpc::Status Rpc(grpc::ServerContext*, const inference::Rpc##Request*, inference::Rpc##Response*) override {     \
        return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "pyflame-serve does not implement " #Rpc);             \
    }
    PYFLAME_UNIMPLEMENTED(SystemSharedMemoryStatus)
    PYFLAME_UNIMPLEMENTED(SystemSharedMemoryRegister)
    PYFLAME_UNIMPLEMENTED(SystemSharedMemoryUnregister)
    PYFLAME_UNIMPLEMENTED(CudaSharedMemoryStatus)
    PYFLAME_UNIMPLEMENTED(CudaSharedMemoryRegister)
    PYFLAME_UNIMPLEMENTED(CudaSharedMemoryUnregister)
    PYFLAME_UNIMPLEMENTED(TraceSetting)
    PYFLAME_UNIMPLEMENTED(LogSettings)
#undef PYFLAME_UNIMPLEMENTED

private:
    ServerCore& core_;
};

struct GrpcFrontend::Impl {
    ServerCore& core;
    std::unique_ptr<InferenceService> service;
    std::unique_ptr<grpc::Server> server;
    int bound_port = 0;
    explicit Impl(ServerCore& c) : core(c) {}
};

GrpcFrontend::GrpcFrontend(ServerCore& core) : impl_(std::make_unique<Impl>(core)) {}
GrpcFrontend::~GrpcFrontend() { stop(); }

namespace {
std::string read_file_or_throw(const std::string& path, const char* what) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw ValidationError(std::string("cannot read TLS ") + what + " '" + path + "'");
    std::stringstream buffer;
    buffer << file.rdbuf();
    return buffer.str();
}
}  // namespace

void GrpcFrontend::start() {
    const auto& config = impl_->core.config;
    impl_->service = std::make_unique<InferenceService>(impl_->core);
    grpc::ServerBuilder builder;
    std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
    const bool tls = config.tls.enabled || (!config.tls.cert_path.empty() && !config.tls.key_path.empty());
    if (tls) {
        grpc::SslServerCredentialsOptions options(config.tls.ca_path.empty()
                                                      ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                      : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
        options.pem_key_cert_pairs.push_back({read_file_or_throw(config.tls.key_path, "key"),
                                              read_file_or_throw(config.tls.cert_path, "certificate")});
        if (!config.tls.ca_path.empty()) options.pem_root_certs = read_file_or_throw(config.tls.ca_path, "CA");
        credentials = grpc::SslServerCredentials(options);
    }
    const std::string address = config.grpc.host + ":" + std::to_string(config.grpc.port);
    builder.AddListeningPort(address, credentials, &impl_->bound_port);
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a port in use is an error, not shared
    builder.RegisterService(impl_->service.get());
    builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<size_t>(config.grpc.max_message_size, INT32_MAX)));
    builder.SetMaxSendMessageSize(static_cast<int>(std::min<size_t>(config.grpc.max_message_size, INT32_MAX)));
    if (config.grpc.num_completion_queues > 0)
        builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, static_cast<int>(config.grpc.num_completion_queues));
    impl_->server = builder.BuildAndStart();
    if (!impl_->server || impl_->bound_port == 0)
        throw PyFlameRTError("cannot bind gRPC to " + address + " (in use, or no permission)");
    std::cout << "[pyflame-serve] gRPC" << (tls ? " (TLS)" : "") << " listening on " << config.grpc.host << ":"
              << impl_->bound_port << std::endl;
}

void GrpcFrontend::stop() {
    if (!impl_->server) return;
    // In-flight RPCs get up to the request timeout to finish.
    const auto deadline = std::chrono::system_clock::now() +
                          std::chrono::milliseconds(std::max<size_t>(1000, impl_->core.config.http.request_timeout_ms));
    impl_->server->Shutdown(deadline);
    impl_->server->Wait();
    impl_->server.reset();
}

uint16_t GrpcFrontend::port() const { return static_cast<uint16_t>(impl_->bound_port); }

}  // namespace pyflame_rt::serving
