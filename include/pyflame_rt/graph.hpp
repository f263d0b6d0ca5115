#pragma once
// Graph: nodes, graph inputs/outputs, initializers (weights) and metadata.
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/dtype.hpp"
#include "pyflame_rt/node.hpp"
#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt {

class Graph {
public:
    Graph();
    explicit Graph(const std::string& name);

    void add_node(std::shared_ptr<Node> node);
    void add_input(const TensorInfo& info);
    void add_output(const TensorInfo& info);
    void add_initializer(const std::string& name, Tensor tensor);
    // Intermediate type/shape annotations (ONNX value_info); filled by shape inference.
    void set_value_info(const TensorInfo& info);

    const std::string& name() const { return name_; }
    void set_name(const std::string& name) { name_ = name; }
    const std::vector<std::shared_ptr<Node>>& nodes() const { return nodes_; }
    const std::vector<TensorInfo>& inputs() const { return inputs_; }
    const std::vector<TensorInfo>& outputs() const { return outputs_; }
    const std::unordered_map<std::string, TensorInfo>& value_infos() const { return value_infos_; }
    void set_inputs(std::vector<TensorInfo> inputs) { inputs_ = std::move(inputs); }
    void set_outputs(std::vector<TensorInfo> outputs) { outputs_ = std::move(outputs); }
    // Replaces the node list (graph rewrites). Nodes may be shared with copies of this graph:
    // rewrite by replacing a node with a changed copy, never by mutating it.
    void set_nodes(std::vector<std::shared_ptr<Node>> nodes) { nodes_ = std::move(nodes); }
    void remove_initializer(const std::string& name);

    bool has_initializer(const std::string& name) const;
    const Tensor& get_initializer(const std::string& name) const;  // ValidationError if absent
    const std::unordered_map<std::string, Tensor>& initializers() const { return initializers_; }
    // Initializer names in insertion order (stable serialization).
    const std::vector<std::string>& initializer_names() const { return initializer_order_; }

    // Nodes ordered so each comes after the producers of its inputs. Throws ValidationError
    // naming the nodes on a cycle.
    std::vector<std::shared_ptr<Node>> topological_sort() const;
    // Every problem found, one message each; empty when the graph is well formed.
    // `outer_scope` names values visible from an enclosing graph (subgraphs of If/Loop).
    std::vector<std::string> validate() const;
    std::vector<std::string> validate(const std::vector<std::string>& outer_scope) const;

    // Opset imports: domain ("" = ai.onnx) -> version.
    std::unordered_map<std::string, int64_t>& opset_imports() { return opset_imports_; }
    const std::unordered_map<std::string, int64_t>& opset_imports() const { return opset_imports_; }
    int64_t opset_version(const std::string& domain = "") const;

    ModelMetadata& metadata() { return metadata_; }
    const ModelMetadata& metadata() const { return metadata_; }

private:
    std::string name_;
    std::vector<std::shared_ptr<Node>> nodes_;
    std::vector<TensorInfo> inputs_;
    std::vector<TensorInfo> outputs_;
    std::unordered_map<std::string, Tensor> initializers_;
    std::vector<std::string> initializer_order_;
    std::unordered_map<std::string, TensorInfo> value_infos_;
    std::unordered_map<std::string, int64_t> opset_imports_;
    ModelMetadata metadata_;
};

}  // namespace pyflame_rt
