#include "pyflame_rt/export/onnx_exporter.hpp"

#include <onnx/onnx_pb.h>

#include <limits>

#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/version.hpp"
#include "util/file_io.hpp"

namespace pyflame_rt {
namespace {

// ONNX IR version 8 (onnx 1.10+) covers opsets up to 17; later opsets need newer IRs.
int64_t ir_version_for(int64_t opset) {
    if (opset <= 15) return 8;
    if (opset <= 18) return 9;
    if (opset <= 21) return 10;
    return 11;
}

int bits_of_packed(DType d) {
    switch (d) {
        case DType::Int4: case DType::UInt4: case DType::Float4E2M1: return 4;
        case DType::Int2: case DType::UInt2: return 2;
        default: return 8;
    }
}

void write_tensor(const std::string& name, const Tensor& t, onnx::TensorProto* out) {
    if (!t.is_plain()) return write_tensor(name, t.plain(), out);  // e.g. weights a session packed
    out->set_name(name);
    out->set_data_type(dtype_to_onnx(t.dtype()));
    for (int64_t d : t.shape()) out->add_dims(d);
    if (t.dtype() == DType::String) {
        for (int64_t i = 0; i < t.num_elements(); ++i) out->add_string_data(t.data_ptr<std::string>()[i]);
        return;
    }
    if (t.size_bytes() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
        throw ValidationError("tensor '" + name + "' is over 2 GB, which an ONNX file cannot hold inline");
    const int bits = bits_of_packed(t.dtype());
    if (bits == 8) {
        out->set_raw_data(t.data(), t.size_bytes());
        return;
    }
    // Sub-byte types are held one per byte here; ONNX packs them, low bits first.
    const int per_byte = 8 / bits;
    const auto* src = t.data_ptr<uint8_t>();
    const int64_t n = t.num_elements();
    std::string packed(static_cast<size_t>((n + per_byte - 1) / per_byte), '\0');
    const uint8_t mask = static_cast<uint8_t>((1 << bits) - 1);
    for (int64_t i = 0; i < n; ++i)
        packed[static_cast<size_t>(i / per_byte)] |= static_cast<char>((src[i] & mask) << ((i % per_byte) * bits));
    out->set_raw_data(packed);
}

void write_value_info(const TensorInfo& info, onnx::ValueInfoProto* out) {
    out->set_name(info.name);
    onnx::TypeProto* type = out->mutable_type();
    if (info.kind == ValueKind::OptionalTensor || info.kind == ValueKind::OptionalSequence)
        type = type->mutable_optional_type()->mutable_elem_type();
    if (info.kind == ValueKind::Sequence || info.kind == ValueKind::OptionalSequence)
        type = type->mutable_sequence_type()->mutable_elem_type();
    auto* tt = type->mutable_tensor_type();
    tt->set_elem_type(dtype_to_onnx(info.dtype));
    if (!info.rank_known) return;
    auto* shape = tt->mutable_shape();
    for (const auto& d : info.shape) {
        auto* dim = shape->add_dim();
        if (d) dim->set_dim_value(*d);
    }
}

void write_graph(const Graph& g, onnx::GraphProto* out);

void write_attribute(const std::string& name, const AttributeValue& value, onnx::AttributeProto* out) {
    out->set_name(name);
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, int64_t>) {
                out->set_type(onnx::AttributeProto::INT);
                out->set_i(v);
            } else if constexpr (std::is_same_v<T, double>) {
                out->set_type(onnx::AttributeProto::FLOAT);
                out->set_f(static_cast<float>(v));
            } else if constexpr (std::is_same_v<T, std::string>) {
                out->set_type(onnx::AttributeProto::STRING);
                out->set_s(v);
            } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
                out->set_type(onnx::AttributeProto::INTS);
                for (auto x : v) out->add_ints(x);
            } else if constexpr (std::is_same_v<T, std::vector<double>>) {
                out->set_type(onnx::AttributeProto::FLOATS);
                for (auto x : v) out->add_floats(static_cast<float>(x));
            } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
                out->set_type(onnx::AttributeProto::STRINGS);
                for (const auto& x : v) out->add_strings(x);
            } else if constexpr (std::is_same_v<T, Tensor>) {
                out->set_type(onnx::AttributeProto::TENSOR);
                write_tensor("", v, out->mutable_t());
            } else if constexpr (std::is_same_v<T, std::shared_ptr<Graph>>) {
                if (!v) throw ValidationError("attribute '" + name + "' holds a null subgraph");
                out->set_type(onnx::AttributeProto::GRAPH);
                write_graph(*v, out->mutable_g());
            }
        },
        value);
}

void write_graph(const Graph& g, onnx::GraphProto* out) {
    out->set_name(g.name());
    for (const auto& name : g.initializer_names()) write_tensor(name, g.get_initializer(name), out->add_initializer());
    for (const auto& i : g.inputs()) write_value_info(i, out->add_input());
    for (const auto& o : g.outputs()) {
        if (!o.rank_known && o.kind == ValueKind::Tensor && o.shape.empty()) {
            // Unknown shape: still a typed tensor output.
            auto* v = out->add_output();
            v->set_name(o.name);
            v->mutable_type()->mutable_tensor_type()->set_elem_type(dtype_to_onnx(o.dtype));
            continue;
        }
        write_value_info(o, out->add_output());
    }
    for (const auto& n : g.nodes()) {
        auto* node = out->add_node();
        node->set_name(n->name());
        node->set_op_type(n->op_type());
        if (!n->domain().empty()) node->set_domain(n->domain());
        if (!n->doc_string.empty()) node->set_doc_string(n->doc_string);
        for (const auto& i : n->inputs()) node->add_input(i);
        for (const auto& o : n->outputs()) node->add_output(o);
        for (const auto& [k, v] : n->attributes()) write_attribute(k, v, node->add_attribute());
    }
}

}  // namespace

std::string export_onnx_bytes(const Graph& graph) {
    onnx::ModelProto model;
    const int64_t opset = graph.opset_imports().count("") ? graph.opset_version("") : 17;
    model.set_ir_version(ir_version_for(opset));
    model.set_producer_name("pyflame_rt");
    model.set_producer_version(kVersion);
    const auto& meta = graph.metadata();
    if (!meta.domain.empty()) model.set_domain(meta.domain);
    model.set_model_version(meta.model_version);
    if (!meta.doc_string.empty()) model.set_doc_string(meta.doc_string);
    for (const auto& [k, v] : meta.custom_metadata) {
        auto* p = model.add_metadata_props();
        p->set_key(k);
        p->set_value(v);
    }
    bool has_default = false;
    for (const auto& [domain, version] : graph.opset_imports()) {
        auto* o = model.add_opset_import();
        o->set_domain(domain);
        o->set_version(version);
        has_default |= domain.empty();
    }
    if (!has_default) {
        auto* o = model.add_opset_import();
        o->set_domain("");
        o->set_version(opset);
    }
    write_graph(graph, model.mutable_graph());
    std::string bytes;
    if (!model.SerializeToString(&bytes)) throw ValidationError("cannot serialize the ONNX model (over 2 GB?)");
    return bytes;
}

void export_onnx(const Graph& graph, const std::string& path) {
    const std::string bytes = export_onnx_bytes(graph);
    AtomicFileWriter writer(path);
    writer.write(bytes.data(), bytes.size());
    writer.commit();
}

}  // namespace pyflame_rt
