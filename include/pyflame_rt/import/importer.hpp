#pragma once
// Importers turn model files of other frameworks into Graphs.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pyflame_rt/graph.hpp"

namespace pyflame_rt {

struct ImportOptions {
    bool validate = true;      // Graph::validate after import; every problem listed on failure
    bool infer_shapes = true;  // fill value infos by shape inference
    bool optimize = false;     // basic optimization passes (not built yet: a warning)
    bool strict = false;       // warnings become failure
};

struct ImportStats {
    size_t node_count = 0;
    size_t initializer_count = 0;
    size_t parameter_count = 0;
    double import_time_ms = 0.0;
    std::vector<std::string> warnings;
};

struct ImportResult {
    bool success = false;
    std::shared_ptr<Graph> graph;
    std::string error;
    ImportStats stats;
};

class Importer {
public:
    virtual ~Importer() = default;
    virtual std::string name() const = 0;
    virtual std::vector<std::string> supported_extensions() const = 0;
    // By extension, or by content when the extension is unknown.
    virtual bool supports(const std::string& path) const = 0;
    virtual ImportResult import_model(const std::string& path, const ImportOptions& options = {}) = 0;
};

class ImporterRegistry {
public:
    static ImporterRegistry& instance();  // holds the built-in importers
    void register_importer(std::unique_ptr<Importer> importer);
    Importer* get_importer(const std::string& path) const;  // nullptr when none supports it
    std::vector<std::string> list_importers() const;
    ImportResult import_model(const std::string& path, const ImportOptions& options = {});

private:
    ImporterRegistry();
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<Importer>> importers_;
};

}  // namespace pyflame_rt
