#pragma once
// The quantization API: everything of pyflame_rt::quantization.
#include "pyflame_rt/quantization/calibrator.hpp"
#include "pyflame_rt/quantization/float16.hpp"
#include "pyflame_rt/quantization/quant_config.hpp"
#include "pyflame_rt/quantization/quantizer.hpp"
#include "pyflame_rt/quantization/report.hpp"
