"""dslc: a compiler for a declarative deep-learning model language.

import dslc
spec = dslc.load("specs/lenet5.dl")     # raises dslc.CompileError with every diagnostic
spec.param_count                        # 61706
print(spec.ir_text())                   # the typed IR
source = spec.torch_source()            # standalone PyTorch module source
model = spec.torch_module()             # an initialized torch.nn.Module
onnx_model = spec.onnx_model(weights=model.state_dict())
"""

from dslc.api import Spec, check, compile_source, load
from dslc.diagnostics import CompileError, Diagnostic
from dslc.errors import DslcError
from dslc.version import __version__

__all__ = [
    "Spec",
    "check",
    "compile_source",
    "load",
    "CompileError",
    "Diagnostic",
    "DslcError",
    "__version__",
]
