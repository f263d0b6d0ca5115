// Error codes, request ids and datatype names of the serving API.
#include "pyflame_rt/serving/types.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>

namespace pyflame_rt::serving {

std::string error_code_name(ServingErrorCode code) {
    switch (code) {
        case ServingErrorCode::OK: return "OK";
        case ServingErrorCode::InvalidRequest: return "InvalidRequest";
        case ServingErrorCode::ModelNotFound: return "ModelNotFound";
        case ServingErrorCode::ModelNotReady: return "ModelNotReady";
        case ServingErrorCode::InferenceError: return "InferenceError";
        case ServingErrorCode::Timeout: return "Timeout";
        case ServingErrorCode::QueueFull: return "QueueFull";
        case ServingErrorCode::InternalError: return "InternalError";
    }
    return "InternalError";
}

int http_status_of(ServingErrorCode code) {
    switch (code) {
        case ServingErrorCode::OK: return 200;
        case ServingErrorCode::InvalidRequest: return 400;
        case ServingErrorCode::ModelNotFound: return 404;
        case ServingErrorCode::ModelNotReady: return 503;
        case ServingErrorCode::InferenceError: return 500;
        case ServingErrorCode::Timeout: return 504;
        case ServingErrorCode::QueueFull: return 503;
        case ServingErrorCode::InternalError: return 500;
    }
    return 500;
}

std::string InferRequest::generate_id() {
    // Random per process plus a counter: unique without coordination.
    static const uint64_t process_salt = std::random_device{}() ^
        static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    static std::atomic<uint64_t> counter{0};
    char buffer[40];
    std::snprintf(buffer, sizeof buffer, "%08llx-%012llx",
                  static_cast<unsigned long long>(process_salt & 0xffffffffULL),
                  static_cast<unsigned long long>(++counter));
    return buffer;
}

InferResponse InferResponse::failure(const InferRequest& request, ServingErrorCode code,
                                     const std::string& message) {
    InferResponse response;
    response.request_id = request.request_id;
    response.model_name = request.model_name;
    response.model_version = request.model_version;
    response.success = false;
    response.error_code = code;
    response.error_message = message;
    return response;
}

namespace {
struct DatatypeName {
    DType dtype;
    const char* kserve;
    const char* triton;
};
constexpr DatatypeName kDatatypes[] = {
    {DType::Bool, "BOOL", "TYPE_BOOL"},      {DType::UInt8, "UINT8", "TYPE_UINT8"},
    {DType::UInt16, "UINT16", "TYPE_UINT16"}, {DType::UInt32, "UINT32", "TYPE_UINT32"},
    {DType::UInt64, "UINT64", "TYPE_UINT64"}, {DType::Int8, "INT8", "TYPE_INT8"},
    {DType::Int16, "INT16", "TYPE_INT16"},    {DType::Int32, "INT32", "TYPE_INT32"},
    {DType::Int64, "INT64", "TYPE_INT64"},    {DType::Float16, "FP16", "TYPE_FP16"},
    {DType::Float32, "FP32", "TYPE_FP32"},    {DType::Float64, "FP64", "TYPE_FP64"},
    {DType::String, "BYTES", "TYPE_STRING"},  {DType::BFloat16, "BF16", "TYPE_BF16"},
};
}  // namespace

std::string kserve_datatype(DType dtype) {
    for (const auto& entry : kDatatypes)
        if (entry.dtype == dtype) return entry.kserve;
    throw ServingError(ServingErrorCode::InvalidRequest,
                       "dtype " + dtype_to_string(dtype) + " has no KServe v2 datatype");
}

DType dtype_from_kserve(const std::string& datatype) {
    for (const auto& entry : kDatatypes)
        if (datatype == entry.kserve) return entry.dtype;
    throw ServingError(ServingErrorCode::InvalidRequest, "unknown datatype '" + datatype +
                       "' (expected BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32, FP64 or BYTES)");
}

std::string triton_config_type(DType dtype) {
    for (const auto& entry : kDatatypes)
        if (entry.dtype == dtype) return entry.triton;
    return "TYPE_INVALID";
}

}  // namespace pyflame_rt::serving
