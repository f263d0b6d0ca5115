#include "pyflame_rt/node.hpp"

#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/graph.hpp"

namespace pyflame_rt {

std::string attribute_kind_name(const AttributeValue& value) {
    static const char* const kNames[] = {"int", "float", "string", "ints", "floats", "strings", "tensor", "graph"};
    return kNames[value.index()];
}

Node::Node(const std::string& op_type, const std::string& name, const std::vector<std::string>& inputs,
           const std::vector<std::string>& outputs)
    : op_type_(op_type), name_(name), inputs_(inputs), outputs_(outputs) {}

void Node::set_input(size_t i, const std::string& name) {
    if (i >= inputs_.size()) inputs_.resize(i + 1);
    inputs_[i] = name;
}

void Node::set_output(size_t i, const std::string& name) {
    if (i >= outputs_.size()) outputs_.resize(i + 1);
    outputs_[i] = name;
}

void Node::set_attribute(const std::string& name, int64_t value) { attributes_[name] = value; }
void Node::set_attribute(const std::string& name, double value) { attributes_[name] = value; }
void Node::set_attribute(const std::string& name, const std::string& value) { attributes_[name] = value; }
void Node::set_attribute(const std::string& name, const std::vector<int64_t>& value) { attributes_[name] = value; }
void Node::set_attribute(const std::string& name, const std::vector<double>& value) { attributes_[name] = value; }
void Node::set_attribute(const std::string& name, const std::vector<std::string>& value) { attributes_[name] = value; }
void Node::set_attribute(const std::string& name, const Tensor& value) { attributes_[name] = value; }
void Node::set_attribute(const std::string& name, std::shared_ptr<Graph> subgraph) { attributes_[name] = std::move(subgraph); }
void Node::set_attribute(const std::string& name, const AttributeValue& value) { attributes_[name] = value; }

std::vector<std::string> Node::attribute_names() const {
    std::vector<std::string> names;
    for (const auto& [k, v] : attributes_) names.push_back(k);
    return names;
}

namespace {

template <typename T> const char* kind_of();
template <> const char* kind_of<int64_t>() { return "int"; }
template <> const char* kind_of<double>() { return "float"; }
template <> const char* kind_of<std::string>() { return "string"; }
template <> const char* kind_of<std::vector<int64_t>>() { return "ints"; }
template <> const char* kind_of<std::vector<double>>() { return "floats"; }
template <> const char* kind_of<std::vector<std::string>>() { return "strings"; }
template <> const char* kind_of<Tensor>() { return "tensor"; }
template <> const char* kind_of<std::shared_ptr<Graph>>() { return "graph"; }

template <typename T>
T convert(const Node& node, const std::string& name, const AttributeValue& value) {
    if (const T* v = std::get_if<T>(&value)) return *v;
    // Widening conversions a user writing {"alpha": 1} expects.
    if constexpr (std::is_same_v<T, double>) {
        if (const auto* i = std::get_if<int64_t>(&value)) return static_cast<double>(*i);
    }
    if constexpr (std::is_same_v<T, std::vector<double>>) {
        if (const auto* is = std::get_if<std::vector<int64_t>>(&value)) return std::vector<double>(is->begin(), is->end());
    }
    throw ValidationError("node '" + node.name() + "' (" + node.op_type() + "): attribute '" + name + "' is " +
                          attribute_kind_name(value) + ", not " + kind_of<T>());
}

}  // namespace

template <typename T>
T Node::get_attribute(const std::string& name) const {
    auto it = attributes_.find(name);
    if (it == attributes_.end())
        throw ValidationError("node '" + name_ + "' (" + op_type_ + "): missing required attribute '" + name + "'");
    return convert<T>(*this, name, it->second);
}

template <typename T>
T Node::get_attribute(const std::string& name, const T& default_value) const {
    auto it = attributes_.find(name);
    if (it == attributes_.end()) return default_value;
    return convert<T>(*this, name, it->second);
}

#define PYFLAME_INSTANTIATE_GET(T)                                          \
    template T Node::get_attribute<T>(const std::string&) const;           \
    template T Node::get_attribute<T>(const std::string&, const T&) const;
PYFLAME_INSTANTIATE_GET(int64_t)
PYFLAME_INSTANTIATE_GET(double)
PYFLAME_INSTANTIATE_GET(std::string)
PYFLAME_INSTANTIATE_GET(std::vector<int64_t>)
PYFLAME_INSTANTIATE_GET(std::vector<double>)
PYFLAME_INSTANTIATE_GET(std::vector<std::string>)
PYFLAME_INSTANTIATE_GET(Tensor)
PYFLAME_INSTANTIATE_GET(std::shared_ptr<Graph>)
#undef PYFLAME_INSTANTIATE_GET

}  // namespace pyflame_rt
