#include <algorithm>

#include "pyflame_rt/import/importer.hpp"
#include "pyflame_rt/import/onnx_importer.hpp"

namespace pyflame_rt {

ImporterRegistry::ImporterRegistry() { importers_.push_back(std::make_unique<ONNXImporter>()); }

ImporterRegistry& ImporterRegistry::instance() {
    static ImporterRegistry registry;
    return registry;
}

void ImporterRegistry::register_importer(std::unique_ptr<Importer> importer) {
    if (!importer) return;
    std::lock_guard<std::mutex> lock(mutex_);
    // A later importer of the same name replaces the earlier one.
    importers_.erase(std::remove_if(importers_.begin(), importers_.end(),
                                    [&](const auto& i) { return i->name() == importer->name(); }),
                     importers_.end());
    importers_.push_back(std::move(importer));
}

Importer* ImporterRegistry::get_importer(const std::string& path) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& i : importers_)
        if (i->supports(path)) return i.get();
    return nullptr;
}

std::vector<std::string> ImporterRegistry::list_importers() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> names;
    for (const auto& i : importers_) names.push_back(i->name());
    return names;
}

ImportResult ImporterRegistry::import_model(const std::string& path, const ImportOptions& options) {
    Importer* importer = get_importer(path);
    if (!importer) {
        ImportResult result;
        result.error = "no importer recognizes '" + path + "'";
        return result;
    }
    return importer->import_model(path, options);
}

}  // namespace pyflame_rt
