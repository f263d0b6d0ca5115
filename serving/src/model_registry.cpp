// ModelRegistry: versions by name, repository scanning, hot reload and memory accounting.
#include "pyflame_rt/serving/model_registry.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <thread>

#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/serving/metrics.hpp"

namespace fs = std::filesystem;

namespace pyflame_rt::serving {

bool is_safe_model_name(const std::string& name) {
    if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
    if (name[0] == '.') return false;  // hidden entries and staging files
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                        c == '-' || c == '.';
        if (!ok) return false;
    }
    return true;
}

namespace {

// Numeric versions compare as numbers and come before other strings.
struct VersionLess {
    bool operator()(const std::string& a, const std::string& b) const {
        auto numeric = [](const std::string& s) {
            return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
        };
        const bool na = numeric(a), nb = numeric(b);
        if (na != nb) return na;
        if (na) {
            auto strip = [](const std::string& s) {
                size_t i = s.find_first_not_of('0');
                return i == std::string::npos ? std::string("0") : s.substr(i);
            };
            std::string sa = strip(a), sb = strip(b);
            if (sa.size() != sb.size()) return sa.size() < sb.size();
            if (sa != sb) return sa < sb;
        }
        return a < b;
    }
};

// What identifies the bytes of one repository version: files' sizes and modification times.
std::string fingerprint_of(const std::vector<std::string>& paths) {
    std::string out;
    for (const auto& path : paths) {
        struct stat info {};
        if (::stat(path.c_str(), &info) != 0) {
            out += path + ":absent;";
            continue;
        }
        out += path + ":" + std::to_string(info.st_size) + ":" + std::to_string(info.st_mtim.tv_sec) + "." +
               std::to_string(info.st_mtim.tv_nsec) + ":" + std::to_string(info.st_ino) + ";";
    }
    return out;
}

struct Candidate {  // one DIR/NAME/VERSION/model.* found on disk
    std::string name, version, model_path, config_path, fingerprint;
};

struct VersionSlot {
    std::shared_ptr<ModelInstance> instance;
    std::string path;
    std::string fingerprint;  // empty when not loaded from the repository
};

using VersionMap = std::map<std::string, VersionSlot, VersionLess>;

}  // namespace

struct ModelRegistry::Impl {
    size_t max_memory = 0;
    std::string repository;
    mutable std::shared_mutex mutex;  // guards models, failures, explicitly_unloaded, overrides
    std::map<std::string, VersionMap> models;
    std::map<std::pair<std::string, std::string>, std::pair<std::string, std::string>> failures;  // -> (fingerprint, reason)
    std::set<std::string> explicitly_unloaded;
    std::map<std::string, std::string> config_overrides;  // name -> JSON from the load API
    std::mutex load_mutex;  // one load at a time: the memory check and the insert stay atomic
    RegistryStats counters;
    std::function<void(const std::string&, const std::string&, bool)> change_callback;

    std::thread poller;
    std::mutex poll_mutex;
    std::condition_variable poll_cv;
    bool poll_stop = false;
    size_t poll_interval_ms = 1000;

    size_t memory_used_locked() const {
        size_t total = 0;
        for (const auto& [name, versions] : models)
            for (const auto& [version, slot] : versions) total += slot.instance->memory_bytes();
        return total;
    }

    void notify(const std::string& name, const std::string& version, bool loaded) {
        bool any_loaded;
        {
            std::shared_lock<std::shared_mutex> lock(mutex);
            auto it = models.find(name);
            any_loaded = it != models.end() && !it->second.empty();
        }
        metrics::model_loaded(name, any_loaded);
        if (change_callback) change_callback(name, version, loaded);
    }

    // Loads a version beside whatever serves now and swaps it in. Throws on failure, leaving
    // the registry as it was.
    void load(const ModelConfig& config, const std::string& fingerprint) {
        if (!is_safe_model_name(config.name))
            throw ServingError(ServingErrorCode::InvalidRequest, "invalid model name '" + config.name +
                               "' (letters, digits, '_', '-', '.'; not starting with '.')");
        if (!is_safe_model_name(config.version))
            throw ServingError(ServingErrorCode::InvalidRequest, "invalid model version '" + config.version + "'");
        std::lock_guard<std::mutex> serial(load_mutex);
        std::shared_ptr<ModelInstance> instance;
        try {
            instance = std::make_shared<ModelInstance>(config);
            std::unique_lock<std::shared_mutex> lock(mutex);
            const size_t used = memory_used_locked();
            if (max_memory > 0 && used + instance->memory_bytes() > max_memory)
                throw ServingError(ServingErrorCode::InvalidRequest, memory_message(config, instance->memory_bytes(), used));
            VersionSlot& slot = models[config.name][config.version];
            std::shared_ptr<ModelInstance> previous = std::move(slot.instance);
            slot.instance = instance;
            slot.path = config.model_path;
            slot.fingerprint = fingerprint;
            failures.erase({config.name, config.version});
            ++counters.loads;
            lock.unlock();
            // Requests holding the previous instance (queued, running or about to call it)
            // finish on it; it is destroyed with the last of them.
        } catch (const std::exception& error) {
            std::unique_lock<std::shared_mutex> lock(mutex);
            ++counters.failed_loads;
            failures[{config.name, config.version}] = {fingerprint, error.what()};
            throw;
        }
        std::cout << "[pyflame-serve] loaded model '" << config.name << "' version " << config.version << " from "
                  << config.model_path << (instance->batching_active() ? " (dynamic batching)" : "") << std::endl;
        notify(config.name, config.version, true);
    }

    // Why `name` serves nothing: its load failed (the reason), it is in the repository and still
    // loading (503: worth a retry), or nobody knows it (404).
    ServingError not_serving(const std::string& name) const {
        {
            std::shared_lock<std::shared_mutex> lock(mutex);
            for (const auto& [key, failure] : failures)
                if (key.first == name && !explicitly_unloaded.count(name))
                    return ServingError(ServingErrorCode::ModelNotFound,
                                        "model '" + name + "' failed to load: " + failure.second);
            if (explicitly_unloaded.count(name))
                return ServingError(ServingErrorCode::ModelNotFound, "model '" + name + "' is unloaded");
        }
        if (!scan(name).empty())
            return ServingError(ServingErrorCode::ModelNotReady, "model '" + name + "' is loading; retry shortly");
        return ServingError(ServingErrorCode::ModelNotFound, "unknown model '" + name + "'");
    }

    std::string memory_message(const ModelConfig& config, size_t needed, size_t used) const {
        return "cannot load model '" + config.name + "' version " + config.version + ": it needs " +
               std::to_string(needed) + " bytes, " + std::to_string(used) + " of max_memory " + std::to_string(max_memory) +
               " bytes are in use";
    }

    bool unload_version(const std::string& name, const std::string& version) {
        std::shared_ptr<ModelInstance> removed;
        {
            std::unique_lock<std::shared_mutex> lock(mutex);
            auto it = models.find(name);
            if (it == models.end()) return false;
            auto slot = it->second.find(version);
            if (slot == it->second.end()) return false;
            removed = std::move(slot->second.instance);
            it->second.erase(slot);
            if (it->second.empty()) models.erase(it);
            ++counters.unloads;
        }
        removed->drain();
        std::cout << "[pyflame-serve] unloaded model '" << name << "' version " << version << std::endl;
        notify(name, version, false);
        return true;
    }

    std::vector<Candidate> scan(const std::string& only_name = "") const {
        std::vector<Candidate> found;
        if (repository.empty()) return found;
        std::error_code ec;
        for (const auto& model_dir : fs::directory_iterator(repository, ec)) {
            const std::string name = model_dir.path().filename().string();
            if (!only_name.empty() && name != only_name) continue;
            if (!is_safe_model_name(name) || !model_dir.is_directory(ec)) continue;
            const std::string config_path = (model_dir.path() / "config.json").string();
            for (const auto& version_dir : fs::directory_iterator(model_dir.path(), ec)) {
                const std::string version = version_dir.path().filename().string();
                if (!is_safe_model_name(version) || !version_dir.is_directory(ec)) continue;
                for (const char* file : {"model.pfm", "model.onnx"}) {
                    const fs::path model_path = version_dir.path() / file;
                    if (fs::is_regular_file(model_path, ec)) {
                        const std::string path = model_path.string();
                        found.push_back({name, version, path, config_path,
                                         fingerprint_of({path, path + ".data", config_path})});
                        break;
                    }
                }
            }
        }
        return found;
    }

    ModelConfig config_for(const Candidate& candidate) const {
        ModelConfig config;
        std::error_code ec;
        if (fs::exists(candidate.config_path, ec)) config = load_model_config(candidate.config_path);
        std::string override_json;
        {
            std::shared_lock<std::shared_mutex> lock(mutex);
            auto it = config_overrides.find(candidate.name);
            if (it != config_overrides.end()) override_json = it->second;
        }
        if (!override_json.empty()) config = merge_model_config(config, override_json);
        config.name = candidate.name;
        config.version = candidate.version;
        config.model_path = candidate.model_path;
        return config;
    }

    // Loads a candidate; failures are recorded (repository_index shows them) and logged.
    bool try_load(const Candidate& candidate) {
        try {
            load(config_for(candidate), candidate.fingerprint);
            return true;
        } catch (const std::exception& error) {
            std::unique_lock<std::shared_mutex> lock(mutex);
            failures[{candidate.name, candidate.version}] = {candidate.fingerprint, error.what()};
            lock.unlock();
            std::cerr << "[pyflame-serve] failed to load model '" << candidate.name << "' version " << candidate.version
                      << ": " << error.what() << std::endl;
            return false;
        }
    }

    void poll_loop() {
        std::unique_lock<std::mutex> lock(poll_mutex);
        while (!poll_stop) {
            poll_cv.wait_for(lock, std::chrono::milliseconds(poll_interval_ms));
            if (poll_stop) break;
            lock.unlock();
            try {
                poll_once();
            } catch (const std::exception& error) {
                std::cerr << "[pyflame-serve] repository poll failed: " << error.what() << std::endl;
            }
            lock.lock();
        }
    }

    void poll_once() {
        const auto candidates = scan();
        std::set<std::pair<std::string, std::string>> on_disk;
        for (const auto& candidate : candidates) {
            on_disk.insert({candidate.name, candidate.version});
            bool skip;
            {
                std::shared_lock<std::shared_mutex> lock(mutex);
                skip = explicitly_unloaded.count(candidate.name) > 0;
                auto model = models.find(candidate.name);
                if (!skip && model != models.end()) {
                    auto slot = model->second.find(candidate.version);
                    if (slot != model->second.end() && slot->second.fingerprint == candidate.fingerprint) skip = true;
                }
                auto failed = failures.find({candidate.name, candidate.version});
                if (!skip && failed != failures.end() && failed->second.first == candidate.fingerprint) skip = true;
            }
            if (!skip) try_load(candidate);
        }
        // Versions that came from the repository and are gone from it are unloaded.
        std::vector<std::pair<std::string, std::string>> gone;
        {
            std::shared_lock<std::shared_mutex> lock(mutex);
            for (const auto& [name, versions] : models)
                for (const auto& [version, slot] : versions)
                    if (!slot.fingerprint.empty() && !on_disk.count({name, version})) gone.push_back({name, version});
        }
        for (const auto& [name, version] : gone) unload_version(name, version);
        std::unique_lock<std::shared_mutex> lock(mutex);
        for (auto it = failures.begin(); it != failures.end();)
            it = on_disk.count(it->first) ? std::next(it) : failures.erase(it);
    }

    void stop_poller() {
        {
            std::lock_guard<std::mutex> lock(poll_mutex);
            poll_stop = true;
        }
        poll_cv.notify_all();
        if (poller.joinable()) poller.join();
        poll_stop = false;
    }
};

ModelRegistry::ModelRegistry(size_t max_memory) : impl_(std::make_unique<Impl>()) { impl_->max_memory = max_memory; }

ModelRegistry::~ModelRegistry() { impl_->stop_poller(); }

void ModelRegistry::register_model(const ModelConfig& config) { impl_->load(config, ""); }

void ModelRegistry::load_from_path(const std::string& name, const std::string& path, const std::string& version) {
    ModelConfig config;
    config.name = name;
    config.model_path = path;
    config.version = version;
    impl_->load(config, "");
}

void ModelRegistry::load_from_directory(const std::string& dir) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw FileNotFoundError(dir);
    impl_->repository = fs::absolute(dir).lexically_normal().string();
    for (const auto& candidate : impl_->scan()) impl_->try_load(candidate);
}

void ModelRegistry::unload(const std::string& name, const std::string& version) {
    if (!impl_->unload_version(name, version))
        throw ServingError(ServingErrorCode::ModelNotFound, "model '" + name + "' version " + version + " is not loaded");
}

void ModelRegistry::unload_all(const std::string& name) {
    std::vector<std::string> versions;
    {
        std::shared_lock<std::shared_mutex> lock(impl_->mutex);
        auto it = impl_->models.find(name);
        if (it == impl_->models.end()) throw ServingError(ServingErrorCode::ModelNotFound, "model '" + name + "' is not loaded");
        for (const auto& [version, slot] : it->second) versions.push_back(version);
    }
    for (const auto& version : versions) impl_->unload_version(name, version);
}

std::shared_ptr<ModelInstance> ModelRegistry::get(const std::string& name, const std::string& version) {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    auto it = impl_->models.find(name);
    if (it == impl_->models.end() || it->second.empty()) {
        lock.unlock();
        throw impl_->not_serving(name);
    }
    if (version.empty()) return it->second.rbegin()->second.instance;
    auto slot = it->second.find(version);
    if (slot == it->second.end())
        throw ServingError(ServingErrorCode::ModelNotFound, "model '" + name + "' has no version '" + version + "'");
    return slot->second.instance;
}

std::shared_ptr<ModelInstance> ModelRegistry::get_latest(const std::string& name) { return get(name, ""); }

bool ModelRegistry::has(const std::string& name, const std::string& version) const {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    auto it = impl_->models.find(name);
    if (it == impl_->models.end()) return false;
    return version.empty() ? !it->second.empty() : it->second.count(version) > 0;
}

std::vector<std::string> ModelRegistry::list_models() const {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    std::vector<std::string> names;
    for (const auto& [name, versions] : impl_->models) names.push_back(name);
    return names;
}

std::vector<ModelVersionInfo> ModelRegistry::list_versions(const std::string& name) const {
    std::map<std::string, ModelVersionInfo, VersionLess> versions;
    for (const auto& candidate : impl_->scan(name)) versions[candidate.version] = {candidate.version, candidate.model_path, false};
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    auto it = impl_->models.find(name);
    if (it != impl_->models.end())
        for (const auto& [version, slot] : it->second) versions[version] = {version, slot.path, true};
    std::vector<ModelVersionInfo> out;
    for (auto& [version, info] : versions) out.push_back(info);
    return out;
}

void ModelRegistry::enable_hot_reload(bool enable, size_t poll_interval_ms) {
    impl_->stop_poller();
    if (!enable) return;
    if (impl_->repository.empty())
        throw ValidationError("hot reload needs a model repository (load_from_directory first)");
    impl_->poll_interval_ms = std::max<size_t>(1, poll_interval_ms);
    impl_->poller = std::thread([this] { impl_->poll_loop(); });
}

void ModelRegistry::reload(const std::string& name, const std::string& version) {
    ModelConfig config;
    std::string fingerprint;
    {
        auto instance = get(name, version);
        config = instance->config();
    }
    {
        std::shared_lock<std::shared_mutex> lock(impl_->mutex);
        fingerprint = impl_->models.at(name).at(config.version).fingerprint;
    }
    if (!fingerprint.empty()) {
        for (const auto& candidate : impl_->scan(name))
            if (candidate.version == config.version) {
                impl_->load(impl_->config_for(candidate), candidate.fingerprint);
                return;
            }
    }
    impl_->load(config, fingerprint);
}

size_t ModelRegistry::memory_used() const {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    return impl_->memory_used_locked();
}

RegistryStats ModelRegistry::get_stats() const {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    RegistryStats stats = impl_->counters;
    stats.num_models = impl_->models.size();
    for (const auto& [name, versions] : impl_->models) stats.num_loaded_versions += versions.size();
    stats.memory_used = impl_->memory_used_locked();
    stats.max_memory = impl_->max_memory;
    return stats;
}

const std::string& ModelRegistry::repository() const { return impl_->repository; }

std::vector<std::string> ModelRegistry::loaded_versions(const std::string& name) const {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    std::vector<std::string> versions;
    auto it = impl_->models.find(name);
    if (it != impl_->models.end())
        for (const auto& [version, slot] : it->second) versions.push_back(version);
    return versions;
}

void ModelRegistry::load_repository_model(const std::string& name, const std::string& config_override_json) {
    if (!is_safe_model_name(name))
        throw ServingError(ServingErrorCode::InvalidRequest, "invalid model name '" + name + "'");
    if (impl_->repository.empty())
        throw ServingError(ServingErrorCode::ModelNotFound, "no model repository is configured");
    if (!config_override_json.empty()) merge_model_config(ModelConfig{}, config_override_json);  // validate first
    const auto candidates = impl_->scan(name);
    if (candidates.empty())
        throw ServingError(ServingErrorCode::ModelNotFound,
                           "model '" + name + "' is not in the repository (expected " + name + "/VERSION/model.pfm or model.onnx)");
    {
        std::unique_lock<std::shared_mutex> lock(impl_->mutex);
        impl_->explicitly_unloaded.erase(name);
        if (config_override_json.empty()) impl_->config_overrides.erase(name);
        else impl_->config_overrides[name] = config_override_json;
    }
    std::string errors;
    std::set<std::string> on_disk;
    for (const auto& candidate : candidates) {
        on_disk.insert(candidate.version);
        try {
            impl_->load(impl_->config_for(candidate), candidate.fingerprint);
        } catch (const std::exception& error) {
            errors += (errors.empty() ? "" : "; ") + std::string("version ") + candidate.version + ": " + error.what();
        }
    }
    for (const auto& info : list_versions(name))
        if (info.is_loaded && !on_disk.count(info.version)) impl_->unload_version(name, info.version);
    if (!errors.empty())
        throw ServingError(ServingErrorCode::InvalidRequest, "failed to load model '" + name + "': " + errors);
}

void ModelRegistry::unload_repository_model(const std::string& name) {
    const bool in_repository = !impl_->scan(name).empty();
    if (!in_repository && !has(name))
        throw ServingError(ServingErrorCode::ModelNotFound, "unknown model '" + name + "'");
    {
        std::unique_lock<std::shared_mutex> lock(impl_->mutex);
        impl_->explicitly_unloaded.insert(name);
    }
    if (has(name)) unload_all(name);
}

std::vector<RepositoryModelState> ModelRegistry::repository_index() const {
    std::map<std::string, std::map<std::string, RepositoryModelState, VersionLess>> index;
    for (const auto& candidate : impl_->scan())
        index[candidate.name][candidate.version] = {candidate.name, candidate.version, "UNAVAILABLE", "unloaded"};
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    for (const auto& [key, failure] : impl_->failures) {
        auto& state = index[key.first][key.second];
        state = {key.first, key.second, "UNAVAILABLE", failure.second};
    }
    for (const auto& [name, versions] : impl_->models)
        for (const auto& [version, slot] : versions)
            index[name][version] = {name, version, slot.instance->is_ready() ? "READY" : "UNAVAILABLE", ""};
    std::vector<RepositoryModelState> out;
    for (auto& [name, versions] : index)
        for (auto& [version, state] : versions) out.push_back(state);
    return out;
}

void ModelRegistry::poll_repository() { impl_->poll_once(); }

bool ModelRegistry::all_ready() const {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    for (const auto& [key, failure] : impl_->failures)
        if (!impl_->explicitly_unloaded.count(key.first) && !impl_->models.count(key.first)) return false;
    for (const auto& [name, versions] : impl_->models) {
        bool any_ready = false;
        for (const auto& [version, slot] : versions) any_ready = any_ready || slot.instance->is_ready();
        if (!any_ready) return false;
    }
    return true;
}

void ModelRegistry::on_change(std::function<void(const std::string&, const std::string&, bool)> callback) {
    impl_->change_callback = std::move(callback);
}

void ModelRegistry::drain_all() {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    for (const auto& [name, versions] : impl_->models)
        for (const auto& [version, slot] : versions) slot.instance->drain();
}

}  // namespace pyflame_rt::serving
