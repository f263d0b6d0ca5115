"""The ONNX backend API (``onnx.backend.base.Backend``) on top of pyflame_rt.

Lets code written against ONNX's backend interface, including ONNX's own test runner
``onnx.backend.test.BackendTest``, run models with PyFlameRT::

    import pyflame_rt.backend as backend
    rep = backend.prepare("model.onnx")           # or an onnx.ModelProto, or serialized bytes
    outputs = rep.run([x])                        # positional inputs, or {"name": array}
    y = outputs[0]                                # also outputs["y"] (output names)
    outputs = backend.run_model(model, [x])
    outputs = backend.run_node(onnx.helper.make_node("Relu", ["x"], ["y"]), [x])

Needs the ``onnx`` package (``pip install pyflame_rt[onnx]``). Only the CPU device is supported.
Keyword arguments of ``prepare`` that name a ``SessionOptions`` property (``num_threads``,
``log_level``, ...) set it; ``options=`` passes a whole ``SessionOptions``; ``providers=`` the
providers; other keywords are ignored, as ONNX's test runner passes its own (``rtol``, ``atol``).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    import onnx
    from onnx import helper as _helper
    from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError("pyflame_rt.backend needs the onnx package: pip install onnx") from _e

from . import Graph, InferenceSession, SessionOptions

__all__ = [
    "PyFlameRTBackend",
    "PyFlameRTBackendRep",
    "prepare",
    "run_model",
    "run_node",
    "supports_device",
    "is_compatible",
]


def _parse_device(device: Any) -> Optional[Device]:
    if isinstance(device, Device):
        return device
    try:
        return Device(str(device).upper())
    except (AttributeError, ValueError):
        return None


def _check_device(device: Any) -> None:
    if not PyFlameRTBackend.supports_device(device):
        raise ValueError(f"PyFlameRTBackend runs on 'CPU' only, not {device!r}")


class PyFlameRTBackendRep(BackendRep):
    """A prepared model: wraps one InferenceSession; ``run`` may be called many times."""

    def __init__(self, session: InferenceSession):
        self._session = session
        self._input_names = [arg.name for arg in session.get_inputs()]
        self._output_names = [arg.name for arg in session.get_outputs()]
        self._outputs_type = namedtupledict("Outputs", self._output_names)

    @property
    def session(self) -> InferenceSession:
        return self._session

    @property
    def input_names(self) -> List[str]:
        return list(self._input_names)

    @property
    def output_names(self) -> List[str]:
        return list(self._output_names)

    def _feeds(self, inputs: Any) -> Dict[str, Any]:
        if isinstance(inputs, dict):
            return dict(inputs)
        if isinstance(inputs, np.ndarray) or np.isscalar(inputs):
            if len(self._input_names) != 1:
                raise ValueError(f"the model has {len(self._input_names)} inputs "
                                 f"({', '.join(self._input_names)}); pass a list or a dict")
            return {self._input_names[0]: inputs}
        values = list(inputs)
        if len(values) > len(self._input_names):
            raise ValueError(f"{len(values)} inputs given; the model has {len(self._input_names)} "
                             f"({', '.join(self._input_names)})")
        return dict(zip(self._input_names, values))

    def run(self, inputs: Any, **kwargs: Any) -> Tuple[Any, ...]:
        """Runs the model. ``inputs``: a list/tuple in the order of the model's (non-initializer)
        inputs, a dict name -> array, or one array for a one-input model. Returns the outputs
        as a tuple indexable by position or by output name. ``run_options=`` is passed on."""
        outputs = self._session.run(None, self._feeds(inputs), kwargs.get("run_options"))
        return self._outputs_type(*outputs)


class PyFlameRTBackend(Backend):
    """ONNX backend API for PyFlameRT (CPU)."""

    @classmethod
    def supports_device(cls, device: str) -> bool:
        parsed = _parse_device(device)
        return parsed is not None and parsed.type == DeviceType.CPU

    @classmethod
    def _session_args(cls, kwargs: Dict[str, Any]) -> Tuple[SessionOptions, Optional[List[str]]]:
        options = kwargs.get("options", kwargs.get("session_options"))
        options = options if options is not None else SessionOptions()
        for key, value in kwargs.items():
            if key in ("options", "session_options", "providers") or key.startswith("_"):
                continue
            if hasattr(SessionOptions, key):
                setattr(options, key, value)
        providers = kwargs.get("providers")
        return options, (list(providers) if providers is not None else None)

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> PyFlameRTBackendRep:
        """Loads a model into an InferenceSession. ``model``: an ``onnx.ModelProto`` (checked with
        ``onnx.checker`` first), serialized ModelProto bytes, a path to a .onnx/.pfm file, a
        pyflame_rt.Graph or an existing InferenceSession. A ModelProto or bytes go through a
        temporary .onnx file (pyflame_rt loads models from files), so tensors stored as external
        data are not found: pass such a model by its path."""
        _check_device(device)
        if isinstance(model, InferenceSession):
            return PyFlameRTBackendRep(model)
        options, providers = cls._session_args(kwargs)
        if isinstance(model, Graph):
            return PyFlameRTBackendRep(InferenceSession(model, options, providers))
        if isinstance(model, (str, os.PathLike)):
            return PyFlameRTBackendRep(InferenceSession(os.fspath(model), options, providers))
        if isinstance(model, onnx.ModelProto):
            data = model.SerializeToString()
            onnx.checker.check_model(data)
        elif isinstance(model, (bytes, bytearray, memoryview)):
            data = bytes(model)
        else:
            raise TypeError(f"prepare() takes an onnx.ModelProto, bytes or a path, not {type(model).__name__}")
        # pyflame_rt loads models from files only: go through a temporary .onnx file.
        fd, path = tempfile.mkstemp(prefix="pyflame_rt_backend_", suffix=".onnx")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            session = InferenceSession(path, options, providers)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        return PyFlameRTBackendRep(session)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> Tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: "onnx.NodeProto",
        inputs: Any,
        device: str = "CPU",
        outputs_info: Optional[Sequence[Tuple[Any, Sequence[Optional[int]]]]] = None,
        **kwargs: Any,
    ) -> Tuple[Any, ...]:
        """Runs one node: builds a one-node model (inputs typed from the given arrays, outputs
        from ``outputs_info`` [(dtype, shape), ...] or ONNX shape inference) and runs it.
        ``inputs``: arrays in the order of the node's non-empty inputs, or a dict.
        ``opset_version=`` picks the ai.onnx opset (default: the newest both onnx and
        pyflame_rt know)."""
        _check_device(device)
        # No Backend.run_node(): its onnx.checker.check_node rejects custom domains; prepare()
        # checks the whole one-node model instead.
        model = cls._node_model(node, inputs, outputs_info, kwargs.get("opset_version"))
        kwargs = {k: v for k, v in kwargs.items() if k != "opset_version"}
        return cls.prepare(model, device, **kwargs).run(
            {vi.name: v for vi, v in zip(model.graph.input, cls._node_input_values(node, inputs))})

    # ---- helpers of run_node ----

    @staticmethod
    def _node_input_values(node: "onnx.NodeProto", inputs: Any) -> List[Any]:
        names = [n for n in node.input if n]
        if isinstance(inputs, dict):
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ValueError(f"run_node: no value for input(s) {', '.join(missing)}")
            return [inputs[n] for n in names]
        values = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        if len(values) != len(names):
            raise ValueError(f"run_node: {len(values)} inputs given, node {node.op_type} has "
                             f"{len(names)} non-empty inputs ({', '.join(names)})")
        return values

    @staticmethod
    def _value_info(name: str, value: Any) -> "onnx.ValueInfoProto":
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f"run_node: cannot type the empty sequence given for {name!r}")
            first = np.asarray(value[0])
            elem = _helper.np_dtype_to_tensor_dtype(first.dtype)
            return _helper.make_tensor_sequence_value_info(name, elem, None)
        array = np.asarray(value)
        return _helper.make_tensor_value_info(name, _helper.np_dtype_to_tensor_dtype(array.dtype),
                                              list(array.shape))

    @classmethod
    def _default_opset(cls) -> int:
        newest = onnx.defs.onnx_opset_version()
        try:
            from . import import_module
            supported = list(import_module.ONNXImporter().supported_opsets())
            if supported:
                return min(newest, max(supported))
        except Exception:  # noqa: BLE001 - fall back to onnx's newest
            pass
        return newest

    @classmethod
    def _node_model(cls, node, inputs, outputs_info, opset_version) -> "onnx.ModelProto":
        values = cls._node_input_values(node, inputs)
        in_names = [n for n in node.input if n]
        graph_inputs = [cls._value_info(n, v) for n, v in zip(in_names, values)]
        out_names = [n for n in node.output if n]
        if outputs_info is not None:
            if len(outputs_info) != len(out_names):
                raise ValueError(f"run_node: outputs_info has {len(outputs_info)} entries, "
                                 f"node {node.op_type} has {len(out_names)} outputs")
            graph_outputs = [
                _helper.make_tensor_value_info(n, _helper.np_dtype_to_tensor_dtype(np.dtype(dt)),
                                               list(shape) if shape is not None else None)
                for n, (dt, shape) in zip(out_names, outputs_info)
            ]
        else:
            graph_outputs = [_helper.make_empty_tensor_value_info(n) for n in out_names]

        opset = int(opset_version) if opset_version is not None else cls._default_opset()
        opsets = [_helper.make_opsetid("", opset)]
        if node.domain not in ("", "ai.onnx"):
            opsets.append(_helper.make_opsetid(node.domain, 1))
        graph = _helper.make_graph([node], f"run_node_{node.op_type}", graph_inputs, graph_outputs)
        model = _helper.make_model(graph, opset_imports=opsets, producer_name="pyflame_rt.backend")
        model.ir_version = _helper.find_min_ir_version_for(opsets, ignore_unknown=True)

        if outputs_info is None:  # type the outputs by ONNX shape inference
            inferred = onnx.shape_inference.infer_shapes(model)
            by_name = {vi.name: vi for vi in list(inferred.graph.output) + list(inferred.graph.value_info)}
            untyped = [n for n in out_names if n not in by_name or not by_name[n].type.WhichOneof("value")]
            if untyped:
                raise ValueError(f"run_node: ONNX shape inference cannot type output(s) {', '.join(untyped)} "
                                 f"of {node.op_type}; pass outputs_info=[(dtype, shape), ...]")
            del model.graph.output[:]
            model.graph.output.extend(by_name[n] for n in out_names)
        return model


# Module-level API, as in onnxruntime.backend.
is_compatible = PyFlameRTBackend.is_compatible
prepare = PyFlameRTBackend.prepare
run_model = PyFlameRTBackend.run_model
run_node = PyFlameRTBackend.run_node
supports_device = PyFlameRTBackend.supports_device
