"""An ORT-format model comes back as ONNX that computes the same, its int8 weights stored as floats once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from voicebot.providers.ort_format import fold_int8_weights, name_subgraphs, onnx_of

RNG = np.random.default_rng(3)
WEIGHT = RNG.integers(-128, 128, size=(4, 3), dtype=np.int8)
SCALE = np.array([0.02], dtype=np.float32)
OFFSET = np.array([-0.5], dtype=np.float32)


def branch(name: str, scale: float) -> onnx.GraphProto:
    """One side of the If: the dequantized weight from the outer graph, times x, times `scale`."""
    return helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "weight"], [f"{name}_product"]),
            helper.make_node("Mul", [f"{name}_product", f"{name}_scale"], [f"{name}_y"]),
        ],
        "",  # unnamed, as onnxruntime writes a model's branches
        [],
        [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.array([scale], dtype=np.float32), f"{name}_scale")],
    )


def quantized_model() -> onnx.ModelProto:
    """Weights kept as int8 and dequantized on every run by Cast, Mul and Add, read inside an If's branches
    (the shape of moonshine-cpp's decoder)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["weight_int8"], ["weight_cast"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["weight_cast", "weight_scale"], ["weight_scaled"]),
            helper.make_node("Add", ["weight_scaled", "weight_offset"], ["weight"]),
            helper.make_node(
                "If", ["flag"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", -2.0)
            ),
        ],
        "quantized",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [
            numpy_helper.from_array(WEIGHT, "weight_int8"),
            numpy_helper.from_array(SCALE, "weight_scale"),
            numpy_helper.from_array(OFFSET, "weight_offset"),
        ],
    )
    graph.node[3].attribute[0].g.name = "then"
    graph.node[3].attribute[1].g.name = "else"
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: str | bytes, x: np.ndarray, flag: bool) -> np.ndarray:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(["y"], {"x": x, "flag": np.array(flag)})[0]
    return result


@pytest.fixture(scope="module")
def ort_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model in onnxruntime's ORT format, written by onnxruntime itself."""
    directory = tmp_path_factory.mktemp("ort")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.optimized_model_filepath = str(directory / "model.ort")
    options.add_session_config_entry("session.save_model_format", "ORT")
    onnxruntime.InferenceSession(quantized_model().SerializeToString(), options)
    return directory / "model.ort"


@pytest.mark.parametrize("flag", [True, False])
def test_the_onnx_computes_what_the_ort_file_computes(ort_file: Path, flag: bool) -> None:
    x = RNG.standard_normal((1, 4)).astype(np.float32)

    np.testing.assert_allclose(run(onnx_of(ort_file), x, flag), run(str(ort_file), x, flag), rtol=1e-6)


def test_the_weights_are_floats_and_nothing_dequantizes_them_at_run_time(ort_file: Path) -> None:
    model = onnx.load_from_string(onnx_of(ort_file))

    assert [node.op_type for node in model.graph.node] == ["If"]
    (weight,) = model.graph.initializer
    assert weight.data_type == TensorProto.FLOAT
    np.testing.assert_array_equal(numpy_helper.to_array(weight), WEIGHT.astype(np.float32) * SCALE + OFFSET)


def test_every_branch_gets_a_name_the_onnx_checker_accepts() -> None:
    model = quantized_model()
    for attribute in model.graph.node[3].attribute:
        attribute.g.name = ""

    name_subgraphs(model.graph)

    names = [attribute.g.name for attribute in model.graph.node[3].attribute]
    assert all(names)
    assert len(set(names)) == 2
    onnx.checker.check_model(model)


def test_a_cast_whose_result_is_read_twice_is_left_as_it_is() -> None:
    model = quantized_model()
    model.graph.node[1].input[1] = "weight_cast"  # the Mul now reads the Cast twice: not a constant's scale

    assert fold_int8_weights(model.graph) == 0
    assert [node.op_type for node in model.graph.node] == ["Cast", "Mul", "Add", "If"]
