#include "pyflame_rt/graph.hpp"

#include <algorithm>
#include <functional>
#include <queue>
#include <unordered_set>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {

Graph::Graph() : Graph("graph") {}
Graph::Graph(const std::string& name) : name_(name) {}

void Graph::add_node(std::shared_ptr<Node> node) {
    if (!node) throw ValidationError("graph '" + name_ + "': add_node(nullptr)");
    nodes_.push_back(std::move(node));
}

void Graph::add_input(const TensorInfo& info) { inputs_.push_back(info); }
void Graph::add_output(const TensorInfo& info) { outputs_.push_back(info); }
void Graph::set_value_info(const TensorInfo& info) { value_infos_[info.name] = info; }

void Graph::add_initializer(const std::string& name, Tensor tensor) {
    if (!initializers_.count(name)) initializer_order_.push_back(name);
    initializers_[name] = std::move(tensor);
}

bool Graph::has_initializer(const std::string& name) const { return initializers_.count(name) != 0; }

void Graph::remove_initializer(const std::string& name) {
    if (!initializers_.erase(name)) return;
    initializer_order_.erase(std::find(initializer_order_.begin(), initializer_order_.end(), name));
}

const Tensor& Graph::get_initializer(const std::string& name) const {
    auto it = initializers_.find(name);
    if (it == initializers_.end()) throw ValidationError("graph '" + name_ + "' has no initializer '" + name + "'");
    return it->second;
}

int64_t Graph::opset_version(const std::string& domain) const {
    auto it = opset_imports_.find(domain);
    return it == opset_imports_.end() ? 0 : it->second;
}

std::vector<std::shared_ptr<Node>> Graph::topological_sort() const {
    // Kahn's algorithm over producer->consumer edges; ties keep the original node order.
    std::unordered_map<std::string, size_t> producer;
    for (size_t i = 0; i < nodes_.size(); ++i)
        for (const auto& out : nodes_[i]->outputs())
            if (!out.empty()) producer.emplace(out, i);

    std::vector<std::vector<size_t>> consumers(nodes_.size());
    std::vector<size_t> pending(nodes_.size(), 0);
    for (size_t i = 0; i < nodes_.size(); ++i) {
        std::unordered_set<size_t> seen;
        for (const auto& in : nodes_[i]->inputs()) {
            auto it = producer.find(in);
            if (it == producer.end() || !seen.insert(it->second).second) continue;
            consumers[it->second].push_back(i);
            ++pending[i];
        }
    }
    std::priority_queue<size_t, std::vector<size_t>, std::greater<size_t>> ready;
    for (size_t i = 0; i < nodes_.size(); ++i)
        if (pending[i] == 0) ready.push(i);
    std::vector<std::shared_ptr<Node>> order;
    order.reserve(nodes_.size());
    while (!ready.empty()) {
        const size_t i = ready.top();
        ready.pop();
        order.push_back(nodes_[i]);
        for (size_t c : consumers[i])
            if (--pending[c] == 0) ready.push(c);
    }
    if (order.size() != nodes_.size()) {
        std::string names;
        for (size_t i = 0; i < nodes_.size(); ++i)
            if (pending[i] != 0) names += (names.empty() ? "" : ", ") + nodes_[i]->name();
        throw ValidationError("graph '" + name_ + "' has a cycle through nodes: " + names);
    }
    return order;
}

std::vector<std::string> Graph::validate() const { return validate({}); }

std::vector<std::string> Graph::validate(const std::vector<std::string>& outer_scope) const {
    std::vector<std::string> problems;
    std::unordered_set<std::string> available(outer_scope.begin(), outer_scope.end());
    std::unordered_set<std::string> graph_inputs;
    for (const auto& in : inputs_) {
        if (!graph_inputs.insert(in.name).second) problems.push_back("graph input '" + in.name + "' is declared twice");
        available.insert(in.name);
    }
    for (const auto& name : initializer_order_) available.insert(name);
    // An initializer named like a graph input is that input's default value, so it must fit it.
    for (const auto& in : inputs_) {
        auto it = initializers_.find(in.name);
        if (it == initializers_.end()) continue;
        const Tensor& init = it->second;
        bool fits = init.dtype() == in.dtype && (!in.rank_known || in.shape.size() == init.ndim());
        for (size_t d = 0; fits && d < in.shape.size(); ++d)
            fits = !in.shape[d] || *in.shape[d] == init.shape()[d];
        if (!fits)
            problems.push_back("initializer '" + in.name + "' (" + dtype_to_string(init.dtype()) + " " +
                               shape_to_string(init.shape()) + ") shadows graph input '" + in.name + "' (" +
                               dtype_to_string(in.dtype) + " " + shape_to_string(in.shape) +
                               ") but cannot serve as its default");
    }

    std::unordered_map<std::string, std::string> produced_by;
    for (const auto& node : nodes_) {
        for (const auto& out : node->outputs()) {
            if (out.empty()) continue;
            auto [it, inserted] = produced_by.emplace(out, node->name());
            if (!inserted)
                problems.push_back("value '" + out + "' is produced by two nodes: '" + it->second + "' and '" +
                                   node->name() + "'");
            if (graph_inputs.count(out))
                problems.push_back("node '" + node->name() + "' overwrites graph input '" + out + "'");
            else if (initializers_.count(out))
                problems.push_back("node '" + node->name() + "' overwrites initializer '" + out + "'");
        }
    }
    for (const auto& node : nodes_) {
        for (const auto& in : node->inputs()) {
            if (!in.empty() && !available.count(in) && !produced_by.count(in))
                problems.push_back("node '" + node->name() + "' (" + node->op_type() + ") consumes '" + in +
                                   "', which no node, graph input or initializer produces");
        }
        for (const auto& [attr, value] : node->attributes()) {
            const auto* sub = std::get_if<std::shared_ptr<Graph>>(&value);
            if (!sub || !*sub) continue;
            std::vector<std::string> scope(available.begin(), available.end());
            for (const auto& [name, _] : produced_by) scope.push_back(name);
            for (const auto& p : (*sub)->validate(scope))
                problems.push_back("node '" + node->name() + "' subgraph '" + attr + "': " + p);
        }
    }
    for (const auto& out : outputs_) {
        if (!produced_by.count(out.name) && !available.count(out.name))
            problems.push_back("graph output '" + out.name + "' is produced by no node, input or initializer");
    }
    try {
        (void)topological_sort();
    } catch (const ValidationError& e) {
        problems.push_back(e.what());
    }
    return problems;
}

}  // namespace pyflame_rt
