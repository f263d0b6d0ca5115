#pragma once
// Node: one operation of a Graph, with typed attributes (ONNX's attribute kinds).
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt {

class Graph;

using AttributeValue = std::variant<int64_t, double, std::string, std::vector<int64_t>,
                                    std::vector<double>, std::vector<std::string>, Tensor,
                                    std::shared_ptr<Graph>>;

// "int", "float", "string", "ints", "floats", "strings", "tensor", "graph".
std::string attribute_kind_name(const AttributeValue& value);

class Node {
public:
    Node(const std::string& op_type, const std::string& name,
         const std::vector<std::string>& inputs, const std::vector<std::string>& outputs);

    const std::string& op_type() const { return op_type_; }
    const std::string& name() const { return name_; }
    const std::string& domain() const { return domain_; }
    void set_domain(const std::string& domain) { domain_ = domain; }
    const std::vector<std::string>& inputs() const { return inputs_; }
    const std::vector<std::string>& outputs() const { return outputs_; }
    // An empty input name marks an omitted optional input (as in ONNX).
    bool has_input(size_t i) const { return i < inputs_.size() && !inputs_[i].empty(); }
    void set_input(size_t i, const std::string& name);
    void set_output(size_t i, const std::string& name);

    void set_attribute(const std::string& name, int64_t value);
    void set_attribute(const std::string& name, double value);
    void set_attribute(const std::string& name, const std::string& value);
    void set_attribute(const std::string& name, const char* value) { set_attribute(name, std::string(value)); }
    void set_attribute(const std::string& name, const std::vector<int64_t>& value);
    void set_attribute(const std::string& name, const std::vector<double>& value);
    void set_attribute(const std::string& name, const std::vector<std::string>& value);
    void set_attribute(const std::string& name, const Tensor& value);
    void set_attribute(const std::string& name, std::shared_ptr<Graph> subgraph);
    void set_attribute(const std::string& name, const AttributeValue& value);

    // Missing attribute or wrong kind: ValidationError naming node and attribute.
    // An int attribute reads as a float, ints as floats (widening only).
    template <typename T> T get_attribute(const std::string& name) const;
    // Missing attribute: the default. Wrong kind still raises.
    template <typename T> T get_attribute(const std::string& name, const T& default_value) const;

    bool has_attribute(const std::string& name) const { return attributes_.count(name) != 0; }
    std::vector<std::string> attribute_names() const;
    const std::map<std::string, AttributeValue>& attributes() const { return attributes_; }
    void remove_attribute(const std::string& name) { attributes_.erase(name); }

    std::string doc_string;

private:
    std::string op_type_;
    std::string name_;
    std::string domain_;  // "" is the default ONNX domain
    std::vector<std::string> inputs_;
    std::vector<std::string> outputs_;
    std::map<std::string, AttributeValue> attributes_;  // ordered: stable serialization
};

}  // namespace pyflame_rt
