#include "pyflame_rt/import/onnx_importer.hpp"

#include <fcntl.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <onnx/onnx_pb.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <limits>

#include "ops/op.hpp"
#include "ops/shape_inference.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/optimize/pass_manager.hpp"
#include "util/file_io.hpp"

namespace pyflame_rt {
namespace {

constexpr int kMinOpset = 1;
constexpr int kMaxOpset = 28;

std::string dir_of(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

DType onnx_dtype(int elem_type, const std::string& what) {
    try {
        return dtype_from_onnx(elem_type);
    } catch (const ValidationError&) {
        throw InvalidModelError(what + " has ONNX element type " + std::to_string(elem_type) +
                                ", which this build does not support");
    }
}

bool is_packed_4bit(DType dtype) {
    return dtype == DType::Int4 || dtype == DType::UInt4 || dtype == DType::Float4E2M1;
}
bool is_packed_2bit(DType dtype) { return dtype == DType::Int2 || dtype == DType::UInt2; }

// ONNX packs 4-bit (2-bit) elements two (four) per byte, low bits first; we hold one per byte.
// Signed types are sign-extended so an Int4 byte reads as a plain int8.
void unpack_bits(const uint8_t* packed, size_t packed_size, uint64_t count, DType dtype, uint8_t* out) {
    const int bits = is_packed_4bit(dtype) ? 4 : 2;
    const int per_byte = 8 / bits;
    const uint8_t mask = static_cast<uint8_t>((1 << bits) - 1);
    const bool sign = dtype == DType::Int4 || dtype == DType::Int2;
    if ((count + per_byte - 1) / per_byte > packed_size) throw InvalidModelError("packed tensor data is too short");
    for (uint64_t i = 0; i < count; ++i) {
        uint8_t v = (packed[i / per_byte] >> ((i % per_byte) * bits)) & mask;
        if (sign && (v & (1 << (bits - 1)))) v |= static_cast<uint8_t>(~mask);
        out[i] = v;
    }
}

// Parses a model file through a stream: false when it is not one protobuf message (or > 2 GiB,
// protobuf's limit for one message: such models keep their weights in external data).
bool parse_model_file(const std::string& path, onnx::ModelProto& model) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw InvalidModelError("cannot open '" + path + "'");
    google::protobuf::io::FileInputStream stream(fd);
    stream.SetCloseOnDelete(true);
    google::protobuf::io::CodedInputStream coded(&stream);
    coded.SetTotalBytesLimit(std::numeric_limits<int>::max());
    return model.ParseFromCodedStream(&coded) && coded.ConsumedEntireMessage();
}

// Reads one model file's tensors; keeps external data files mapped while tensors use them.
// When the parsed model is the importer's own (`take_raw_bytes`), tensors stored as raw bytes are
// not copied: each takes its bytes out of the model, so a model's weights are in memory once.
class TensorReader {
public:
    explicit TensorReader(std::string model_dir, bool take_raw_bytes = false)
        : model_dir_(std::move(model_dir)), take_raw_bytes_(take_raw_bytes) {}

    Tensor read(const onnx::TensorProto& p) {
        const std::string what = "tensor '" + p.name() + "'";
        if (p.has_segment()) throw InvalidModelError(what + " is segmented, which ONNX deprecated and this build does not read");
        const DType dtype = onnx_dtype(p.data_type(), what);
        std::vector<int64_t> dims(p.dims().begin(), p.dims().end());
        uint64_t count = 1;
        for (int64_t d : dims) {
            if (d < 0) throw InvalidModelError(what + " has a negative dimension");
            if (d != 0 && count > std::numeric_limits<uint64_t>::max() / 16 / static_cast<uint64_t>(d))
                throw InvalidModelError(what + " is impossibly large");
            count *= static_cast<uint64_t>(d);
        }
        const uint64_t bytes = count * dtype_size(dtype);

        if (p.data_location() == onnx::TensorProto::EXTERNAL) return read_external(p, dims, dtype, bytes);
        const bool packed_bits = is_packed_4bit(dtype) || is_packed_2bit(dtype);
        if (take_raw_bytes_ && p.has_raw_data() && !packed_bits && dtype != DType::String && bytes != 0) {
            if (p.raw_data().size() != bytes)
                throw InvalidModelError(what + " has " + std::to_string(p.raw_data().size()) + " bytes; its shape needs " +
                                        std::to_string(bytes));
            // The bytes move out of the parsed model into a buffer of this tensor's own (a string
            // swap: no copy), so each weight is freed on its own, e.g. once a kernel keeps only a
            // packed copy. The model is ours: parsed here, read once.
            auto bytes_of_tensor = std::make_shared<std::string>();
            bytes_of_tensor->swap(*const_cast<onnx::TensorProto&>(p).mutable_raw_data());
            void* data = bytes_of_tensor->data();
            return Tensor(std::shared_ptr<void>(bytes_of_tensor, data), data, dims, dtype);
        }

        Tensor t(dims, dtype);
        auto* out = static_cast<uint8_t*>(t.data());
        auto expect = [&](int64_t n, uint64_t needed) {
            if (static_cast<uint64_t>(n) != needed)
                throw InvalidModelError(what + " has " + std::to_string(n) + " values; its shape needs " + std::to_string(needed));
        };
        if (dtype == DType::String) {
            expect(p.string_data_size(), count);
            for (uint64_t i = 0; i < count; ++i) t.data_ptr<std::string>()[i] = p.string_data(static_cast<int>(i));
            return t;
        }
        const bool packed = packed_bits;
        const uint64_t per_byte = is_packed_4bit(dtype) ? 2 : is_packed_2bit(dtype) ? 4 : 1;
        if (p.has_raw_data()) {
            const uint64_t needed = packed ? (count + per_byte - 1) / per_byte : bytes;
            if (p.raw_data().size() != needed)
                throw InvalidModelError(what + " has " + std::to_string(p.raw_data().size()) + " bytes; its shape needs " +
                                        std::to_string(needed));
            const auto* raw = reinterpret_cast<const uint8_t*>(p.raw_data().data());
            if (packed) unpack_bits(raw, p.raw_data().size(), count, dtype, out);
            else if (bytes) std::memcpy(out, raw, bytes);
            return t;
        }
        switch (dtype) {
            case DType::Float32:
                expect(p.float_data_size(), count);
                std::memcpy(out, p.float_data().data(), bytes);
                break;
            case DType::Complex64:  // (real, imaginary) pairs
                expect(p.float_data_size(), 2 * count);
                std::memcpy(out, p.float_data().data(), bytes);
                break;
            case DType::Float64:
                expect(p.double_data_size(), count);
                std::memcpy(out, p.double_data().data(), bytes);
                break;
            case DType::Complex128:
                expect(p.double_data_size(), 2 * count);
                std::memcpy(out, p.double_data().data(), bytes);
                break;
            case DType::Int64:
                expect(p.int64_data_size(), count);
                std::memcpy(out, p.int64_data().data(), bytes);
                break;
            case DType::UInt32:
            case DType::UInt64: {
                expect(p.uint64_data_size(), count);
                const size_t width = dtype_size(dtype);
                for (uint64_t i = 0; i < count; ++i) {
                    const uint64_t v = p.uint64_data(static_cast<int>(i));
                    std::memcpy(out + i * width, &v, width);  // little-endian: low bytes first
                }
                break;
            }
            default: {
                if (packed) {  // int32_data holds the packed bytes, one per entry
                    std::vector<uint8_t> bytes_of(static_cast<size_t>(p.int32_data_size()));
                    for (int i = 0; i < p.int32_data_size(); ++i) bytes_of[i] = static_cast<uint8_t>(p.int32_data(i));
                    expect(p.int32_data_size(), (count + per_byte - 1) / per_byte);
                    unpack_bits(bytes_of.data(), bytes_of.size(), count, dtype, out);
                    break;
                }
                // int32_data carries int32, int16, int8, uint8, uint16, bool and the bits of the
                // 16- and 8-bit floats.
                expect(p.int32_data_size(), count);
                const size_t width = dtype_size(dtype);
                for (uint64_t i = 0; i < count; ++i) {
                    const int32_t v = p.int32_data(static_cast<int>(i));
                    std::memcpy(out + i * width, &v, width);  // little-endian: low bytes first
                }
            }
        }
        return t;
    }

private:
    Tensor read_external(const onnx::TensorProto& p, const std::vector<int64_t>& dims, DType dtype, uint64_t bytes) {
        const std::string what = "tensor '" + p.name() + "'";
        std::string location;
        const uint64_t count = bytes / dtype_size(dtype);
        const uint64_t per_byte = is_packed_4bit(dtype) ? 2 : is_packed_2bit(dtype) ? 4 : 1;
        const uint64_t stored = per_byte > 1 ? (count + per_byte - 1) / per_byte : bytes;  // bytes on disk
        uint64_t offset = 0, length = stored;
        for (const auto& kv : p.external_data()) {
            try {
                if (kv.key() == "location") location = kv.value();
                else if (kv.key() == "offset") offset = std::stoull(kv.value());
                else if (kv.key() == "length") length = std::stoull(kv.value());
            } catch (const std::exception&) {
                throw InvalidModelError(what + ": bad external data field '" + kv.key() + "'");
            }
        }
        if (location.empty() || location.find("..") != std::string::npos || location[0] == '/')
            throw InvalidModelError(what + ": external data location '" + location + "' must be a relative path inside the model folder");
        if (dtype == DType::String) throw InvalidModelError(what + ": string tensors cannot use external data");
        if (length != stored) throw InvalidModelError(what + ": external data length " + std::to_string(length) + " does not match its shape");
        const std::string path = model_dir_ + "/" + location;
        auto& file = files_[path];
        if (!file.mapping) {
            try {
                file.mapping = map_file(path, file.size);
            } catch (const FileNotFoundError&) {
                throw InvalidModelError(what + ": external data file '" + path + "' is missing");
            }
        }
        if (offset > file.size || length > file.size - offset)
            throw InvalidModelError(what + " lies outside its external data file '" + path + "'");
        auto* src = static_cast<const uint8_t*>(file.mapping.get()) + offset;
        if (per_byte > 1) {
            Tensor t(dims, dtype);
            unpack_bits(src, length, count, dtype, static_cast<uint8_t*>(t.data()));
            return t;
        }
        if (offset % 64 == 0) return Tensor(file.mapping, const_cast<uint8_t*>(src), dims, dtype);  // zero-copy
        Tensor t(dims, dtype);
        if (bytes) std::memcpy(t.data(), src, bytes);
        return t;
    }

    struct MappedFile {
        std::shared_ptr<void> mapping;
        size_t size = 0;
    };
    std::string model_dir_;
    bool take_raw_bytes_ = false;
    std::unordered_map<std::string, MappedFile> files_;
};

// Tensors, sequences of tensors and optionals of either.
TensorInfo value_info_from_onnx(const onnx::ValueInfoProto& v) {
    TensorInfo info{v.name(), DType::Float32, {}};
    const onnx::TypeProto* type = &v.type();
    bool optional = false, sequence = false;
    if (type->has_optional_type()) {
        optional = true;
        type = &type->optional_type().elem_type();
    }
    if (type->has_sequence_type()) {
        sequence = true;
        type = &type->sequence_type().elem_type();
    }
    if (type->value_case() == onnx::TypeProto::VALUE_NOT_SET) {
        info.rank_known = false;  // no type given (legal for outputs): inferred later if possible
        return info;
    }
    if (!type->has_tensor_type())
        throw InvalidModelError("value '" + v.name() + "' is not a tensor, a sequence of tensors or an optional of them "
                                "(maps and sparse tensors are not supported)");
    info.kind = sequence ? (optional ? ValueKind::OptionalSequence : ValueKind::Sequence)
                         : (optional ? ValueKind::OptionalTensor : ValueKind::Tensor);
    const auto& tt = type->tensor_type();
    info.dtype = onnx_dtype(tt.elem_type(), "value '" + v.name() + "'");
    info.rank_known = tt.has_shape();
    if (tt.has_shape()) {
        for (const auto& d : tt.shape().dim()) {
            if (d.has_dim_value() && d.dim_value() >= 0) info.shape.push_back(d.dim_value());
            else info.shape.push_back(std::nullopt);
        }
    }
    return info;
}

std::shared_ptr<Graph> graph_from_onnx(const onnx::GraphProto& g, TensorReader& reader, ImportStats& stats);

AttributeValue attribute_from_onnx(const onnx::AttributeProto& a, const Node& node, TensorReader& reader, ImportStats& stats) {
    switch (a.type()) {
        case onnx::AttributeProto::FLOAT: return static_cast<double>(a.f());
        case onnx::AttributeProto::INT: return static_cast<int64_t>(a.i());
        case onnx::AttributeProto::STRING: return a.s();
        case onnx::AttributeProto::TENSOR: return reader.read(a.t());
        case onnx::AttributeProto::GRAPH: return graph_from_onnx(a.g(), reader, stats);
        case onnx::AttributeProto::FLOATS: return std::vector<double>(a.floats().begin(), a.floats().end());
        case onnx::AttributeProto::INTS: return std::vector<int64_t>(a.ints().begin(), a.ints().end());
        case onnx::AttributeProto::STRINGS: return std::vector<std::string>(a.strings().begin(), a.strings().end());
        default:
            throw InvalidModelError("node " + ops::node_label(node) + ": attribute '" + a.name() + "' has ONNX type " +
                                    std::to_string(a.type()) + ", which this build does not support");
    }
}

std::shared_ptr<Graph> graph_from_onnx(const onnx::GraphProto& g, TensorReader& reader, ImportStats& stats) {
    auto graph = std::make_shared<Graph>(g.name().empty() ? "main" : g.name());
    for (const auto& init : g.initializer()) {
        Tensor t = reader.read(init);
        stats.parameter_count += static_cast<size_t>(t.num_elements());
        ++stats.initializer_count;
        graph->add_initializer(init.name(), std::move(t));
    }
    for (const auto& in : g.input()) graph->add_input(value_info_from_onnx(in));
    for (const auto& out : g.output()) graph->add_output(value_info_from_onnx(out));
    for (const auto& v : g.value_info()) {
        // Intermediate annotations are hints: one we cannot represent is dropped, not fatal.
        try {
            graph->set_value_info(value_info_from_onnx(v));
        } catch (const InvalidModelError&) {
        }
    }
    size_t unnamed = 0;
    for (const auto& n : g.node()) {
        const std::string name = n.name().empty() ? n.op_type() + "_" + std::to_string(unnamed++) : n.name();
        auto node = std::make_shared<Node>(n.op_type(), name, std::vector<std::string>(n.input().begin(), n.input().end()),
                                           std::vector<std::string>(n.output().begin(), n.output().end()));
        node->set_domain(n.domain() == "ai.onnx" ? "" : n.domain());
        node->doc_string = n.doc_string();
        for (const auto& a : n.attribute()) {
            if (!a.ref_attr_name().empty())
                throw InvalidModelError("node " + ops::node_label(*node) + ": attribute references (functions) are not supported yet");
            node->set_attribute(a.name(), attribute_from_onnx(a, *node, reader, stats));
        }
        graph->add_node(std::move(node));
        ++stats.node_count;
    }
    return graph;
}

}  // namespace

ONNXImporter::ONNXImporter() = default;
ONNXImporter::~ONNXImporter() = default;

std::string ONNXImporter::name() const { return "onnx"; }
std::vector<std::string> ONNXImporter::supported_extensions() const { return {".onnx"}; }

bool ONNXImporter::supports(const std::string& path) const {
    if (ends_with(path, ".onnx")) return true;
    // By content: a ModelProto starts with field 1 (ir_version, varint) in every exporter we know.
    std::ifstream in(path, std::ios::binary);
    char first = 0;
    return in.get(first) && first == 0x08;
}

std::vector<int> ONNXImporter::supported_opsets() const {
    std::vector<int> v;
    for (int i = kMinOpset; i <= kMaxOpset; ++i) v.push_back(i);
    return v;
}

ImportResult ONNXImporter::import_model(const std::string& path, const ImportOptions& options) {
    const auto start = std::chrono::steady_clock::now();
    ImportResult result;
    require_file_exists(path);  // FileNotFoundError propagates: a missing file is not a failed import
    try {
        // Parsed straight from the file (no second copy of its bytes); the weights' bytes then
        // move from the parsed model into the graph's tensors.
        onnx::ModelProto model;
        if (!parse_model_file(path, model))
            throw InvalidModelError("'" + path + "' is not a valid ONNX model (protobuf parse failed)");
        if (!model.has_graph()) throw InvalidModelError("'" + path + "' has no graph");

        TensorReader reader(dir_of(path), /*take_raw_bytes=*/true);
        auto graph = graph_from_onnx(model.graph(), reader, result.stats);
        for (const auto& o : model.opset_import()) {
            const std::string domain = o.domain() == "ai.onnx" ? "" : o.domain();
            graph->opset_imports()[domain] = o.version();
        }
        if (model.opset_import_size() == 0) graph->opset_imports()[""] = 1;  // IR v1: no opset_import
        const int64_t opset = graph->opset_version("");
        const bool uses_default_domain = graph->opset_imports().count("") != 0;
        if (uses_default_domain && (opset < kMinOpset || opset > kMaxOpset))
            throw InvalidModelError("'" + path + "' uses ai.onnx opset " + std::to_string(opset) + "; supported opsets are " +
                                    std::to_string(kMinOpset) + ".." + std::to_string(kMaxOpset));

        auto& meta = graph->metadata();
        meta.producer_name = model.producer_name();
        meta.producer_version = model.producer_version();
        meta.domain = model.domain();
        meta.model_version = model.model_version();
        meta.doc_string = model.doc_string();
        for (const auto& kv : model.metadata_props()) meta.custom_metadata[kv.key()] = kv.value();

        for (const auto& node : graph->nodes())
            if (!ops::OpTable::instance().find(node->op_type(), node->domain()))
                result.stats.warnings.push_back("operator " + node->op_type() + " (node '" + node->name() +
                                                "') is not built in; it must be registered as a custom op to run");
        if (options.validate) {
            const auto problems = graph->validate();
            if (!problems.empty()) {
                std::string all;
                for (const auto& p : problems) all += "\n  " + p;
                throw InvalidModelError("'" + path + "' failed validation:" + all);
            }
        }
        if (options.infer_shapes) {
            for (auto& w : ops::infer_shapes(*graph)) result.stats.warnings.push_back(std::move(w));
        }
        if (options.optimize) optimize::PassManager().run_level(*graph, 1);
        if (options.strict && !result.stats.warnings.empty())
            throw InvalidModelError("strict import of '" + path + "' failed on warnings: " + result.stats.warnings.front());
        result.graph = std::move(graph);
        result.success = true;
    } catch (const PyFlameRTError& e) {
        result.success = false;
        result.graph.reset();
        result.error = e.what();
    }
    result.stats.import_time_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return result;
}

}  // namespace pyflame_rt
