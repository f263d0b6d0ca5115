"""Importers of other frameworks' model files.

>>> importer = pyflame_rt.import_module.ONNXImporter()        # doctest: +SKIP
>>> result = importer.import_model("model.onnx")                # doctest: +SKIP
>>> session = pyflame_rt.InferenceSession(result.graph)         # doctest: +SKIP
"""

from ._pyflame_rt import ImportOptions, ImportResult, ImportStats
from ._pyflame_rt import import_module as _native

ONNXImporter = _native.ONNXImporter
import_model = _native.import_model
list_importers = _native.list_importers

__all__ = ["ONNXImporter", "import_model", "list_importers", "ImportOptions", "ImportResult", "ImportStats"]

for _obj in (ONNXImporter, import_model, list_importers):
    try:
        _obj.__module__ = __name__
    except (AttributeError, TypeError):
        pass
del _obj
