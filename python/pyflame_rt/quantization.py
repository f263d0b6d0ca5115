"""Model quantization: FP16, BFloat16, dynamic INT8 and calibrated static INT8.

>>> from pyflame_rt.quantization import Quantizer, QuantConfig          # doctest: +SKIP
>>> result = Quantizer(QuantConfig.dynamic_int8()).quantize_dynamic(graph)  # doctest: +SKIP
>>> session = pyflame_rt.InferenceSession(result.quantized_graph)      # doctest: +SKIP

Quantized graphs use standard ONNX ops only (Cast, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QuantizeLinear, DequantizeLinear), so ``pyflame_rt.export_onnx`` writes files
ONNX Runtime runs as they are. Calibration over many batches shows a tqdm progress bar.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from ._pyflame_rt import quantization as _native

QuantMode = _native.QuantMode
QuantGranularity = _native.QuantGranularity
CalibrationMethod = _native.CalibrationMethod
QuantConfig = _native.QuantConfig
QuantParams = _native.QuantParams
GraphQuantInfo = _native.GraphQuantInfo
QuantizationStats = _native.QuantizationStats
QuantizationResult = _native.QuantizationResult
CalibrationStats = _native.CalibrationStats
QuantizationReport = _native.QuantizationReport
quant_mode_name = _native.quant_mode_name
default_fp32_keep_ops = _native.default_fp32_keep_ops
float32_to_float16_bits = _native.float32_to_float16_bits
float16_bits_to_float32 = _native.float16_bits_to_float32
float32_to_bfloat16_bits = _native.float32_to_bfloat16_bits
bfloat16_bits_to_float32 = _native.bfloat16_bits_to_float32
HISTOGRAM_BINS = _native.HISTOGRAM_BINS

DataProvider = Callable[[], Dict[str, object]]


def _batches(num_batches: int, progress: bool, what: str):
    if num_batches < 0:
        raise ValueError(f"num_batches must be >= 0, got {num_batches}")
    if not progress:
        return range(num_batches)
    from tqdm.auto import tqdm

    return tqdm(range(num_batches), desc=what, unit="batch", leave=False)


class Calibrator(_native.Calibrator):
    """Collects activation statistics for static INT8 quantization.

    ``observe(feed)`` runs the graph on one batch; ``calibrate(provider, n)`` does so for ``n``
    batches from ``provider()`` with a progress bar; ``compute_quant_params()`` returns a
    GraphQuantInfo by the config's calibration method.
    """

    def calibrate(self, data_provider: DataProvider, num_batches: int, progress: bool = True) -> None:
        if not callable(data_provider):
            raise TypeError("data_provider must be a callable returning a dict of input arrays")
        for _ in _batches(num_batches, progress, "calibrating"):
            self.observe(data_provider())


class Quantizer(_native.Quantizer):
    """Rewrites a Graph into quantized form; the input graph is never changed.

    Raises ValidationError for an invalid QuantConfig (see ``QuantConfig.validation_error()``).
    """

    def quantize_with_calibration(
        self, graph, data_provider: DataProvider, num_batches: int, progress: bool = True
    ) -> QuantizationResult:
        """Calibrates on ``num_batches`` batches from ``data_provider()``, then quantizes.

        Conv/Gemm biases absorb the mean shift of their rounded weights (bias correction), and
        when the quantized outputs on the first calibration batches fall below cosine
        similarity ``Quantizer.MIN_OUTPUT_COSINE`` to the float outputs, the shortest prefix of
        the graph that reaches it stays in float (see ``QuantizationStats.nodes_skipped``)."""
        from . import ValidationError

        if num_batches <= 0:
            raise ValidationError("StaticInt8 needs calibration data: num_batches must be > 0")
        if self.config.mode != QuantMode.StaticInt8:
            raise ValidationError(
                "Quantizer.quantize_with_calibration needs a QuantConfig with mode StaticInt8, got "
                + quant_mode_name(self.config.mode))
        if not callable(data_provider):
            raise TypeError("data_provider must be a callable returning a dict of input arrays")
        calibrator = Calibrator(graph, self.config)
        # The first batches also check the quantized model's accuracy (see _quantize_calibrated).
        samples = []
        for _ in _batches(num_batches, progress, "calibrating"):
            feed = data_provider()
            calibrator.observe(feed)
            if len(samples) < _native.Quantizer.ACCURACY_SAMPLE_BATCHES:  # copied: providers may reuse buffers
                samples.append({k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in feed.items()})
        return self._quantize_calibrated(graph, calibrator.compute_quant_params(), samples)


__all__ = [
    "QuantMode", "QuantGranularity", "CalibrationMethod", "QuantConfig", "QuantParams", "GraphQuantInfo",
    "QuantizationStats", "QuantizationResult", "Quantizer", "Calibrator", "CalibrationStats",
    "QuantizationReport", "quant_mode_name", "default_fp32_keep_ops", "float32_to_float16_bits",
    "float16_bits_to_float32", "float32_to_bfloat16_bits", "bfloat16_bits_to_float32", "HISTOGRAM_BINS",
]

for _name in __all__:
    _obj = globals()[_name]
    try:
        if getattr(_obj, "__module__", "").startswith("pyflame_rt._pyflame_rt"):
            _obj.__module__ = __name__
    except (AttributeError, TypeError):
        pass
del _name, _obj
