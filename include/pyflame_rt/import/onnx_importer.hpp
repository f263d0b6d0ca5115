#pragma once
#include "pyflame_rt/import/importer.hpp"

namespace pyflame_rt {

class ONNXImporter : public Importer {
public:
    ONNXImporter();
    ~ONNXImporter() override;

    std::string name() const override;
    std::vector<std::string> supported_extensions() const override;
    bool supports(const std::string& path) const override;
    ImportResult import_model(const std::string& path, const ImportOptions& options = {}) override;

    std::vector<int> supported_opsets() const;
};

}  // namespace pyflame_rt
