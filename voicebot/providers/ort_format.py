"""An ORT-format model (onnxruntime's mobile format) as ONNX, its int8 weights turned into floats once.

moonshine-cpp ships Moonshine base as ORT files whose weights are int8 tensors dequantized by a Cast, a Mul
and an Add on every run: a decoding step took 64 ms on one core here. onnxruntime does not optimise an
ORT-format graph; given it as ONNX, its constant folding did that work once (11 ms a step) but kept copies
per branch of the decoder's If (534 MB for the decoder). Folded here, in numpy, each weight is kept once: the
decoder takes 156 MB with onnxruntime's prepacking off, and a step 12 ms. Quantizing the floats again
(onnxruntime.quantization.quantize_dynamic) took 62 MB and 9 ms, but heard worse: espeak-ng's questions went
from 15% to 32% of words wrong.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper


def onnx_of(path: Path) -> bytes:
    """The ONNX model of the ORT-format file at `path`, its int8 weights folded and its branches named."""
    with tempfile.TemporaryDirectory(prefix="voicebot-ort-") as scratch:
        exported = Path(scratch) / "model.onnx"
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        # onnxruntime writes the graph it loaded as ONNX; nothing is optimised away on the way.
        options.optimized_model_filepath = str(exported)
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(exported))
    fold_int8_weights(model.graph)
    # Its branches (the decoder's If on use_cache_branch) come out unnamed, which the ONNX checker refuses.
    name_subgraphs(model.graph)
    serialised: bytes = model.SerializeToString()
    return serialised


def fold_int8_weights(graph: onnx.GraphProto) -> int:
    """Replace each `Cast(int8 weight) * scale (+ offset)` of constants by its float result; how many."""
    constants = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded: list[onnx.TensorProto] = []
    gone: set[str] = set()
    for cast in graph.node:
        weight = constants.get(cast.input[0]) if cast.op_type == "Cast" else None
        if weight is None or weight.data_type != onnx.TensorProto.INT8:
            continue
        chain = [cast]
        value = numpy_helper.to_array(weight).astype(np.float32)
        for operation, apply in (("Mul", np.multiply), ("Add", np.add)):
            nexts = readers.get(chain[-1].output[0], [])
            if len(nexts) != 1 or nexts[0].op_type != operation:
                break
            others = [name for name in nexts[0].input if name != chain[-1].output[0]]
            if len(others) != 1 or others[0] not in constants:
                break
            value = apply(value, numpy_helper.to_array(constants[others[0]]).astype(np.float32))
            chain.append(nexts[0])
        if len(chain) == 1:
            continue
        folded.append(numpy_helper.from_array(value.astype(np.float32), chain[-1].output[0]))
        gone.update(node.output[0] for node in chain)
    kept = [node for node in graph.node if node.output[0] not in gone]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(folded)
    read = _read_names(graph) | {output.name for output in graph.output}
    still_read = [tensor for tensor in graph.initializer if tensor.name in read]
    del graph.initializer[:]
    graph.initializer.extend(still_read)
    return len(folded)


def name_subgraphs(graph: onnx.GraphProto) -> None:
    """Give every unnamed subgraph a name of its node and attribute."""
    for node in graph.node:
        for attribute in node.attribute:
            for index, branch in enumerate(_branches(attribute)):
                if not branch.name:
                    branch.name = f"{node.name or node.op_type}.{attribute.name}.{index}"
                name_subgraphs(branch)


def _read_names(graph: onnx.GraphProto) -> set[str]:
    """Every value a node of `graph` or of its subgraphs reads."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for branch in _branches(attribute):
                names |= _read_names(branch)
    return names


def _branches(attribute: onnx.AttributeProto) -> list[onnx.GraphProto]:
    """The subgraphs an attribute holds (an If's branch, a Loop's body): one, several or none."""
    return [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
