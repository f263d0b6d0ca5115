#include "pyflame_rt/model_io.hpp"

#include <cstring>
#include <limits>

#include "pfm.pb.h"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/version.hpp"
#include "util/crc32.hpp"
#include "util/file_io.hpp"

namespace pyflame_rt {
namespace {

// \x89 and \r\n\x1a\n catch text-mode transfers, as in PNG.
constexpr char kMagic[8] = {'\x89', 'P', 'F', 'M', '\r', '\n', '\x1a', '\n'};
constexpr size_t kHeaderSize = 32;
constexpr uint64_t kExternalAlignment = 64;

struct Header {
    char magic[8];
    uint32_t format_version;
    uint32_t flags;
    uint64_t payload_size;
    uint32_t payload_crc32;
    uint32_t reserved;
};
static_assert(sizeof(Header) == kHeaderSize, "header layout");

std::string file_name_of(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string dir_of(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

// ---------------------------------------------------------------- writing

struct ExternalSink {
    AtomicFileWriter* writer = nullptr;  // null: everything inline
    int64_t min_tensor_bytes = 0;
};

void write_value_info(const TensorInfo& info, pfm::ValueInfo* out) {
    out->set_name(info.name);
    out->set_dtype(static_cast<int>(info.dtype));
    out->set_rank_unknown(!info.rank_known);
    out->set_kind(static_cast<int>(info.kind));
    for (const auto& d : info.shape) {
        auto* dim = out->add_shape();
        dim->set_dynamic(!d.has_value());
        if (d) dim->set_value(*d);
    }
}

void write_tensor(const std::string& name, const Tensor& t, pfm::TensorData* out, ExternalSink& sink) {
    if (!t.is_plain()) return write_tensor(name, t.plain(), out, sink);  // e.g. weights a session packed
    out->set_name(name);
    out->set_dtype(static_cast<int>(t.dtype()));
    for (int64_t d : t.shape()) out->add_dims(d);
    const size_t bytes = t.size_bytes();
    if (t.dtype() == DType::String) {
        for (int64_t i = 0; i < t.num_elements(); ++i) out->add_string_data(t.data_ptr<std::string>()[i]);
        return;
    }
    if (sink.writer && static_cast<int64_t>(bytes) >= sink.min_tensor_bytes) {
        static const char zeros[kExternalAlignment] = {};
        const uint64_t pad = (kExternalAlignment - sink.writer->bytes_written() % kExternalAlignment) % kExternalAlignment;
        sink.writer->write(zeros, pad);
        auto* ext = out->mutable_external();
        ext->set_offset(sink.writer->bytes_written());
        ext->set_length(bytes);
        ext->set_crc32(crc32(t.data(), bytes));
        sink.writer->write(t.data(), bytes);
    } else {
        out->set_raw_data(t.data(), bytes);
    }
}

void write_graph(const Graph& g, pfm::Graph* out, ExternalSink& sink);

void write_attribute(const std::string& name, const AttributeValue& value, pfm::Attribute* out, ExternalSink& sink) {
    out->set_name(name);
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, int64_t>) out->set_i(v);
            else if constexpr (std::is_same_v<T, double>) out->set_f(v);
            else if constexpr (std::is_same_v<T, std::string>) out->set_s(v);
            else if constexpr (std::is_same_v<T, std::vector<int64_t>>) *out->mutable_ints()->mutable_values() = {v.begin(), v.end()};
            else if constexpr (std::is_same_v<T, std::vector<double>>) *out->mutable_floats()->mutable_values() = {v.begin(), v.end()};
            else if constexpr (std::is_same_v<T, std::vector<std::string>>) *out->mutable_strings()->mutable_values() = {v.begin(), v.end()};
            else if constexpr (std::is_same_v<T, Tensor>) {
                ExternalSink inline_sink;  // attribute tensors stay with their node
                write_tensor(name, v, out->mutable_t(), inline_sink);
            } else if constexpr (std::is_same_v<T, std::shared_ptr<Graph>>) {
                if (!v) throw ValidationError("attribute '" + name + "' holds a null subgraph");
                write_graph(*v, out->mutable_g(), sink);
            }
        },
        value);
}

void write_graph(const Graph& g, pfm::Graph* out, ExternalSink& sink) {
    out->set_name(g.name());
    for (const auto& n : g.nodes()) {
        auto* node = out->add_nodes();
        node->set_name(n->name());
        node->set_op_type(n->op_type());
        node->set_domain(n->domain());
        node->set_doc_string(n->doc_string);
        for (const auto& i : n->inputs()) node->add_inputs(i);
        for (const auto& o : n->outputs()) node->add_outputs(o);
        for (const auto& [k, v] : n->attributes()) write_attribute(k, v, node->add_attributes(), sink);
    }
    for (const auto& i : g.inputs()) write_value_info(i, out->add_inputs());
    for (const auto& o : g.outputs()) write_value_info(o, out->add_outputs());
    for (const auto& [name, info] : g.value_infos()) write_value_info(info, out->add_value_infos());
    for (const auto& name : g.initializer_names()) write_tensor(name, g.get_initializer(name), out->add_initializers(), sink);
}

int64_t total_initializer_bytes(const Graph& g) {
    int64_t total = 0;
    for (const auto& [name, t] : g.initializers()) total += static_cast<int64_t>(t.size_bytes());
    for (const auto& n : g.nodes())
        for (const auto& [k, v] : n->attributes())
            if (const auto* sub = std::get_if<std::shared_ptr<Graph>>(&v); sub && *sub) total += total_initializer_bytes(**sub);
    return total;
}

// ---------------------------------------------------------------- reading

struct ExternalSource {
    std::string path;
    std::shared_ptr<void> mapping;
    size_t size = 0;
};

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
    throw InvalidModelError("'" + path + "' is corrupt: " + what);
}

DType read_dtype(int code, const std::string& path, const std::string& what) {
    if (!is_valid_dtype_code(code)) corrupt(path, what + " has unknown dtype code " + std::to_string(code));
    return static_cast<DType>(code);
}

TensorInfo read_value_info(const pfm::ValueInfo& in, const std::string& path) {
    if (in.kind() < 0 || in.kind() > static_cast<int>(ValueKind::OptionalSequence))
        corrupt(path, "value '" + in.name() + "' has unknown kind " + std::to_string(in.kind()));
    TensorInfo info{in.name(), read_dtype(in.dtype(), path, "value '" + in.name() + "'"), {}, !in.rank_unknown(),
                    static_cast<ValueKind>(in.kind())};
    for (const auto& d : in.shape()) {
        if (d.dynamic()) info.shape.push_back(std::nullopt);
        else if (d.value() < 0) corrupt(path, "value '" + in.name() + "' has a negative dimension");
        else info.shape.push_back(d.value());
    }
    return info;
}

Tensor read_tensor(const pfm::TensorData& in, const std::string& path, const ExternalSource& ext) {
    const DType dtype = read_dtype(in.dtype(), path, "tensor '" + in.name() + "'");
    std::vector<int64_t> dims(in.dims().begin(), in.dims().end());
    // Overflow-checked byte count: a flipped bit in a dim must not become a huge allocation.
    uint64_t bytes = dtype_size(dtype);
    for (int64_t d : dims) {
        if (d < 0) corrupt(path, "tensor '" + in.name() + "' has a negative dimension");
        if (d != 0 && bytes > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
            corrupt(path, "tensor '" + in.name() + "' is impossibly large");
        bytes *= static_cast<uint64_t>(d);
    }
    if (dtype == DType::String) {
        if (static_cast<uint64_t>(in.string_data_size()) * dtype_size(dtype) != bytes)
            corrupt(path, "string tensor '" + in.name() + "' has " + std::to_string(in.string_data_size()) +
                              " elements; its shape needs " + std::to_string(bytes / dtype_size(dtype)));
        Tensor t(dims, dtype);
        for (int i = 0; i < in.string_data_size(); ++i) t.data_ptr<std::string>()[i] = in.string_data(i);
        return t;
    }
    if (in.has_external()) {
        const auto& e = in.external();
        if (!ext.mapping && ext.size == 0) corrupt(path, "tensor '" + in.name() + "' refers to external data, but the model names no data file");
        if (e.length() != bytes || e.offset() > ext.size || e.length() > ext.size - e.offset())
            corrupt(path, "tensor '" + in.name() + "' lies outside its external data file '" + ext.path + "'");
        auto* base = static_cast<uint8_t*>(ext.mapping.get()) + e.offset();
        if (crc32(base, bytes) != e.crc32())
            throw InvalidModelError("'" + ext.path + "' is corrupt: checksum of tensor '" + in.name() + "' does not match");
        return Tensor(ext.mapping, base, dims, dtype);  // zero-copy view into the mapping
    }
    if (in.raw_data().size() != bytes)
        corrupt(path, "tensor '" + in.name() + "' has " + std::to_string(in.raw_data().size()) + " bytes of data; its shape needs " +
                          std::to_string(bytes));
    Tensor t(dims, dtype);
    if (bytes) std::memcpy(t.data(), in.raw_data().data(), bytes);
    return t;
}

std::shared_ptr<Graph> read_graph(const pfm::Graph& in, const std::string& path, const ExternalSource& ext);

AttributeValue read_attribute(const pfm::Attribute& a, const std::string& path, const ExternalSource& ext) {
    switch (a.value_case()) {
        case pfm::Attribute::kI: return a.i();
        case pfm::Attribute::kF: return a.f();
        case pfm::Attribute::kS: return a.s();
        case pfm::Attribute::kInts: return std::vector<int64_t>(a.ints().values().begin(), a.ints().values().end());
        case pfm::Attribute::kFloats: return std::vector<double>(a.floats().values().begin(), a.floats().values().end());
        case pfm::Attribute::kStrings: return std::vector<std::string>(a.strings().values().begin(), a.strings().values().end());
        case pfm::Attribute::kT: return read_tensor(a.t(), path, ext);
        case pfm::Attribute::kG: return read_graph(a.g(), path, ext);
        default: corrupt(path, "attribute '" + a.name() + "' has no value");
    }
}

std::shared_ptr<Graph> read_graph(const pfm::Graph& in, const std::string& path, const ExternalSource& ext) {
    auto g = std::make_shared<Graph>(in.name());
    for (const auto& n : in.nodes()) {
        if (n.op_type().empty()) corrupt(path, "node '" + n.name() + "' has no op_type");
        auto node = std::make_shared<Node>(n.op_type(), n.name(), std::vector<std::string>(n.inputs().begin(), n.inputs().end()),
                                           std::vector<std::string>(n.outputs().begin(), n.outputs().end()));
        node->set_domain(n.domain());
        node->doc_string = n.doc_string();
        for (const auto& a : n.attributes()) node->set_attribute(a.name(), read_attribute(a, path, ext));
        g->add_node(std::move(node));
    }
    for (const auto& i : in.inputs()) g->add_input(read_value_info(i, path));
    for (const auto& o : in.outputs()) g->add_output(read_value_info(o, path));
    for (const auto& v : in.value_infos()) g->set_value_info(read_value_info(v, path));
    for (const auto& t : in.initializers()) g->add_initializer(t.name(), read_tensor(t, path, ext));
    return g;
}

}  // namespace

bool is_pfm_file(const std::string& path) {
    char magic[sizeof(kMagic)] = {};
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    const size_t n = std::fread(magic, 1, sizeof(magic), f);
    std::fclose(f);
    return n == sizeof(magic) && std::memcmp(magic, kMagic, sizeof(kMagic)) == 0;
}

void save_model(const Graph& graph, const std::string& path, const SaveOptions& options) {
    pfm::Model model;
    model.set_format_version(kPfmFormatVersion);
    model.set_writer(std::string("pyflame_rt ") + kVersion);
    const auto& meta = graph.metadata();
    auto* m = model.mutable_metadata();
    m->set_producer_name(meta.producer_name);
    m->set_producer_version(meta.producer_version);
    m->set_domain(meta.domain);
    m->set_model_version(meta.model_version);
    m->set_doc_string(meta.doc_string);
    for (const auto& [k, v] : meta.custom_metadata) (*m->mutable_custom())[k] = v;
    for (const auto& [domain, version] : graph.opset_imports()) {
        auto* o = model.add_opset_imports();
        o->set_domain(domain);
        o->set_version(version);
    }

    // Weights go to PATH.data when keeping them inline would approach protobuf's 2 GB limit.
    std::unique_ptr<AtomicFileWriter> data_writer;
    ExternalSink sink;
    if (total_initializer_bytes(graph) > options.external_data_total_threshold) {
        data_writer = std::make_unique<AtomicFileWriter>(path + ".data");
        sink.writer = data_writer.get();
        sink.min_tensor_bytes = options.external_data_min_tensor_bytes;
        model.set_external_data_file(file_name_of(path) + ".data");
    }
    write_graph(graph, model.mutable_graph(), sink);

    std::string payload;
    if (!model.SerializeToString(&payload))
        throw PyFlameRTError("cannot serialize model for '" + path + "' (over 2 GB inline? lower the external data threshold)");
    Header header{};
    std::memcpy(header.magic, kMagic, sizeof(kMagic));
    header.format_version = kPfmFormatVersion;
    header.payload_size = payload.size();
    header.payload_crc32 = crc32(payload.data(), payload.size());

    // The data file lands first: a model file never refers to data that is not there yet.
    if (data_writer) data_writer->commit();
    AtomicFileWriter writer(path);
    writer.write(&header, sizeof(header));
    writer.write(payload.data(), payload.size());
    writer.commit();
}

std::shared_ptr<Graph> load_model(const std::string& path) {
    const std::vector<uint8_t> bytes = read_file_bytes(path);
    if (bytes.size() < kHeaderSize || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
        throw InvalidModelError("'" + path + "' is not a .pfm model (no PFM header)");
    Header header{};
    std::memcpy(&header, bytes.data(), sizeof(header));
    if (header.format_version == 0 || header.format_version > kPfmFormatVersion)
        throw InvalidModelError("'" + path + "' has .pfm format version " + std::to_string(header.format_version) +
                                "; this build reads versions 1.." + std::to_string(kPfmFormatVersion));
    if (header.flags != 0 || header.reserved != 0) corrupt(path, "unknown header flags");
    if (header.payload_size != bytes.size() - kHeaderSize)
        corrupt(path, "truncated or padded: header says " + std::to_string(header.payload_size) + " payload bytes, file has " +
                          std::to_string(bytes.size() - kHeaderSize));
    const uint8_t* payload = bytes.data() + kHeaderSize;
    if (crc32(payload, header.payload_size) != header.payload_crc32) corrupt(path, "checksum mismatch");

    pfm::Model model;
    if (!model.ParseFromArray(payload, static_cast<int>(header.payload_size))) corrupt(path, "payload does not parse");

    ExternalSource ext;
    if (!model.external_data_file().empty()) {
        const std::string& name = model.external_data_file();
        if (name.find('/') != std::string::npos || name == "..")
            corrupt(path, "external data file name '" + name + "' must be a plain file name");
        ext.path = dir_of(path) + "/" + name;
        try {
            ext.mapping = map_file(ext.path, ext.size);
        } catch (const FileNotFoundError&) {
            throw InvalidModelError("'" + path + "' needs its external data file '" + ext.path + "', which is missing");
        }
    }
    auto graph = read_graph(model.graph(), path, ext);
    const auto& m = model.metadata();
    auto& meta = graph->metadata();
    meta.producer_name = m.producer_name();
    meta.producer_version = m.producer_version();
    meta.domain = m.domain();
    meta.model_version = m.model_version();
    meta.doc_string = m.doc_string();
    for (const auto& [k, v] : m.custom()) meta.custom_metadata[k] = v;
    for (const auto& o : model.opset_imports()) graph->opset_imports()[o.domain()] = o.version();
    return graph;
}

}  // namespace pyflame_rt
