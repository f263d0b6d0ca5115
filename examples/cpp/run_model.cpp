// Loads a model (.pfm or .onnx), feeds every input with a deterministic ramp (dynamic dims
// become 1) and prints each output's shape and first values.
//   run_model MODEL [--expect-output N]
#include <pyflame_rt/pyflame_rt.hpp>

#include <cstdlib>
#include <iostream>
#include <string>

using namespace pyflame_rt;

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: run_model MODEL\n";
        return 2;
    }
    try {
        InferenceSession session(argv[1]);
        std::unordered_map<std::string, Tensor> feeds;
        for (const auto& in : session.get_inputs()) {
            std::vector<int64_t> dims;
            for (const auto& d : in.shape) dims.push_back(d.value_or(1));
            if (in.dtype != DType::Float32) {
                std::cerr << "input '" << in.name << "' is " << dtype_to_string(in.dtype) << "; this example feeds Float32\n";
                return 1;
            }
            Tensor t(dims, DType::Float32);
            float* p = t.data_ptr<float>();
            for (int64_t i = 0; i < t.num_elements(); ++i) p[i] = static_cast<float>(i % 17) / 17.0f - 0.5f;
            std::cout << "input " << in.name << " " << shape_to_string(dims) << "\n";
            feeds.emplace(in.name, std::move(t));
        }
        const auto outputs = session.run({}, feeds);
        const auto infos = session.get_outputs();
        for (size_t i = 0; i < outputs.size(); ++i) {
            const Tensor& out = outputs[i];
            std::cout << "output " << infos[i].name << " " << shape_to_string(out.shape()) << ":";
            if (out.dtype() == DType::Float32)
                for (int64_t k = 0; k < std::min<int64_t>(out.num_elements(), 5); ++k) std::cout << " " << out.data_ptr<float>()[k];
            std::cout << "\n";
        }
        std::cout << "pyflame_rt " << kVersion << " ok\n";
        return 0;
    } catch (const PyFlameRTError& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
