#pragma once
// Loaded models by name and version. Loads happen outside the lock and are swapped in
// atomically; callers hold shared_ptrs, so a request in flight finishes on the instance it got.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pyflame_rt/serving/config.hpp"
#include "pyflame_rt/serving/model_instance.hpp"
#include "pyflame_rt/serving/types.hpp"

namespace pyflame_rt::serving {

struct RepositoryModelState {
    std::string name;
    std::string version;
    std::string state;   // "READY", "UNAVAILABLE", "LOADING"
    std::string reason;  // why it is unavailable
};

class ModelRegistry {
public:
    explicit ModelRegistry(size_t max_memory = 0);
    ~ModelRegistry();
    ModelRegistry(const ModelRegistry&) = delete;
    ModelRegistry& operator=(const ModelRegistry&) = delete;

    // Loads (or reloads) config.name / config.version from config.model_path. ServingError
    // (InvalidRequest) when max_memory would be exceeded or the name is not a plain name.
    void register_model(const ModelConfig& config);
    void load_from_path(const std::string& name, const std::string& path, const std::string& version = "1");
    // Sets `dir` as the repository and loads every DIR/NAME/VERSION/model.{pfm,onnx} (with
    // DIR/NAME/config.json); models that fail are reported in repository_index() and logged.
    void load_from_directory(const std::string& dir);
    void unload(const std::string& name, const std::string& version);
    void unload_all(const std::string& name);
    // Empty version: the latest. ServingError(ModelNotFound) when absent.
    std::shared_ptr<ModelInstance> get(const std::string& name, const std::string& version = "");
    std::shared_ptr<ModelInstance> get_latest(const std::string& name);
    bool has(const std::string& name, const std::string& version = "") const;
    std::vector<std::string> list_models() const;
    std::vector<ModelVersionInfo> list_versions(const std::string& name) const;
    // Hot reload: a thread polls the repository every poll_interval_ms; new versions load,
    // changed files reload beside the serving version and swap in, removed versions unload.
    void enable_hot_reload(bool enable, size_t poll_interval_ms = 1000);
    // Reloads from the same path (beside the old instance, then swapped in).
    void reload(const std::string& name, const std::string& version);
    size_t memory_used() const;
    RegistryStats get_stats() const;

    // Extensions.
    const std::string& repository() const;
    // The loaded versions of NAME, ascending (no disk access, unlike list_versions).
    std::vector<std::string> loaded_versions(const std::string& name) const;
    // Repository API: (re)load every version of NAME from the repository, with optional
    // ModelConfig overrides (JSON object). ServingError(ModelNotFound) if NAME is not there.
    void load_repository_model(const std::string& name, const std::string& config_override_json = "");
    // Unloads all versions; the poller leaves the model alone until it is loaded again.
    void unload_repository_model(const std::string& name);
    std::vector<RepositoryModelState> repository_index() const;
    // One pass of the hot-reload scan (what the polling thread does).
    void poll_repository();
    // True when every model found in the repository (and registered) has a ready version.
    bool all_ready() const;
    // Called after a model version is loaded (true) or unloaded (false).
    void on_change(std::function<void(const std::string& name, const std::string& version, bool loaded)> callback);
    void drain_all();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// True when `name` is usable as a model or version directory name (no '/', '..', NUL, ...).
bool is_safe_model_name(const std::string& name);

}  // namespace pyflame_rt::serving
