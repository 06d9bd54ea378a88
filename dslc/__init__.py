"""dslc: a compiler for a declarative deep-learning model language.

import dslc
spec = dslc.load("specs/lenet5.dl")     # raises dslc.CompileError with every diagnostic
spec.param_count                        # 61706
print(spec.ir_text())                   # the typed IR
source = spec.torch_source()            # standalone PyTorch module source
model = spec.torch_module()             # an initialized torch.nn.Module
onnx_model = spec.onnx_model(weights=model.state_dict())
"""

__version__ = "0.1.0"

from dslc.api import Spec, check, compile_source, load  # noqa: E402
from dslc.diagnostics import CompileError, Diagnostic  # noqa: E402
from dslc.errors import DslcError  # noqa: E402

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
