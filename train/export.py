"""`stampcheck export`: the model as one graph that other tools load (ONNX, TorchScript).

The graph is the torch engine's own (:class:`InferenceGraph`): uint8 photos in, per-cell scores and
boxes in input pixels out; stampcheck.engine does the rest (threshold, NMS, photo pixels).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stampcheck.atomic import atomic_path, remove_own_partials
from stampcheck.engine.config import META_KEY, ONNX_NAME, TORCHSCRIPT_NAME, ModelError
from stampcheck.engine.graph import load_graph
from stampcheck.engine.network import load_model_dir
from stampcheck.engine.onnx import source_digest, verifier_file
from stampcheck.engine.verifier import load_verifier
from stampcheck.paths import lock_output, refuse_held
from stampcheck.train.finish import LEARNER_NAME, export_learner

FORMATS = {"onnx": ONNX_NAME, "torchscript": TORCHSCRIPT_NAME, "fastai": LEARNER_NAME}
OPSET = 17  # onnxruntime 1.14 and later, OpenCV 4.8, TensorRT 8.6 read it
SCORE_TOLERANCE, BOX_TOLERANCE = 1e-3, 0.5  # px: what an export may differ from torch by


def metadata(model_dir: Path, config: dict) -> str:
    return json.dumps({"config": config, "source_sha256": source_digest(model_dir),
                       "input": "uint8 (B, 3, S, S) RGB, the photo squished to S x S (bilinear)",
                       "outputs": "scores (B, HW, C) in 0..1; boxes (B, HW, 4) x0, y0, x1, y1 in input pixels"})


def is_export(path: Path) -> bool:
    """Whether ``path`` is a file an earlier export wrote (the only kind export replaces)."""
    if not path.is_file():  # reading a named pipe to find out would block; a folder or device is not ours either
        return False
    try:
        if zipfile.is_zipfile(path):  # TorchScript
            with zipfile.ZipFile(path) as z:
                return any(n.endswith(f"extra/{META_KEY}.json") for n in z.namelist())
        import onnx

        if path.stat().st_size >= 2**31:  # past protobuf's limit: no ONNX file, and not worth reading
            return False
        model = onnx.load(str(path), load_external_data=False)
        return any(p.key == META_KEY for p in model.metadata_props)
    except Exception:  # anything unreadable is not ours
        return False


def export(model_dir: Path, fmt: str = "onnx", out: Path | None = None) -> tuple[Path, tuple | None]:
    """Write the model as ``fmt`` (atomically; an existing file only when an earlier export wrote
    it), holding the folder it writes into as every command does (stampcheck.paths.lock_output):
    by default the model folder, which a training into it holds too. Returns the file and the
    largest differences between its scores and boxes and torch's on a test batch (None when no
    onnxruntime is installed to check an ONNX file)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    model_dir = Path(model_dir)
    out = Path(out) if out else model_dir / FORMATS[fmt]
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the path of the file to write")
    if fmt == "fastai":
        return export_fastai(model_dir, out), None
    if out.exists() and not is_export(out):
        raise ValueError(f"{out} exists and is not an earlier stampcheck export; it is left as it is "
                         "(choose another --out)")
    refuse_held(out.parent, "the folder")  # a run writing there: said before the model loads
    config, graph = load_graph(model_dir)
    size = int(config["size"])
    # two different photos: a batch of 2 keeps the batch axis a variable, and tells the graph apart
    # from one that ignores its input
    example = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, size, size), dtype=np.uint8))
    meta = metadata(model_dir, config)
    verifier = load_verifier(model_dir, config)
    second = verifier_file(out)
    if verifier is not None and (second.exists() or second.is_symlink()) and not is_export(second):
        raise ValueError(f"{second} exists and is not an earlier stampcheck export; it is left as it is "
                         f"(the verifier's graph goes there, beside {out.name}: choose another --out)")
    with lock_output(out.parent, "export", "the folder"):
        remove_own_partials(out.parent, re.escape(out.name))  # what an export killed mid-write left
        difference = write_graph(graph, example, out, fmt, meta, "image", ["scores", "boxes"])
        if verifier is not None:  # the second look: a graph of its own beside the detector's
            look, vgraph = verifier
            crops = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, look.size, look.size),
                                                                       dtype=np.uint8))
            remove_own_partials(out.parent, re.escape(second.name))
            vdiff = write_graph(vgraph, crops, second, fmt, meta, "crops", ["probs"])
            if difference and vdiff:
                difference = (max(difference[0], vdiff[0]), difference[1])
    return out, difference


def write_graph(graph: nn.Module, example: torch.Tensor, out: Path, fmt: str, meta: str, input_name: str,
                output_names: list[str]) -> tuple[float, float] | None:
    """Write one graph as ``fmt``, atomically, and check it on ``example`` (see :func:`check`); a file
    whose outputs differ from torch's beyond the tolerances is not written."""
    with atomic_path(out) as tmp:
        with warnings.catch_warnings():
            # torch.jit says it is deprecated, and the ONNX exporter used here that a newer one exists
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                tmp.write_bytes(onnx_bytes(graph, example, meta, input_name, output_names))
            else:
                with torch.no_grad():
                    traced = torch.jit.trace(graph, example)
                torch.jit.save(traced, str(tmp), _extra_files={f"{META_KEY}.json": meta})
            difference = check(graph, tmp, fmt, example, input_name)
        if difference and (difference[0] > SCORE_TOLERANCE or difference[1] > BOX_TOLERANCE):
            raise ModelError(f"the exported graph {out.name}'s outputs differ from torch's (scores by "
                             f"{difference[0]:.2g}, boxes by {difference[1]:.2g} px); nothing written")
    return difference


def onnx_bytes(graph: nn.Module, example: torch.Tensor, meta: str, input_name: str = "image",
               output_names: tuple = ("scores", "boxes")) -> bytes:
    """The graph as ONNX with a variable batch size and the model's config in its metadata.

    torch's TorchScript-based exporter (``dynamo=False``): it needs no onnxscript, works offline and
    gives a plain graph of standard operators; this network has no control flow, which is all the
    newer exporter would add."""
    try:
        import onnx
    except ImportError as e:
        raise ModelError("ONNX export needs the onnx package: pip install onnx") from e
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=OPSET, input_names=[input_name],
                          output_names=list(output_names),
                          dynamic_axes={name: {0: "batch"} for name in (input_name, *output_names)})
        outputs = graph(example)
    model = onnx.load_from_string(buf.getvalue())
    # the exporter leaves the axes after the batch symbolic; stated, they let a reader (and the ONNX
    # engine's load check) see the grid and the classes without running the graph
    for out, value in zip(model.graph.output, outputs if isinstance(outputs, tuple) else (outputs,)):
        for dim, n in zip(list(out.type.tensor_type.shape.dim)[1:], value.shape[1:]):
            dim.dim_value = int(n)
    model.doc_string = "stampcheck stamp detector; metadata 'stampcheck' holds its config"
    onnx.helper.set_model_props(model, {META_KEY: meta})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check(graph: nn.Module, path: Path, fmt: str, example: torch.Tensor,
          input_name: str = "image") -> tuple[float, float] | None:
    """Run the written file on ``example``: the largest differences of its scores (or a verifier's
    probabilities) and boxes (0 for a verifier) from torch's."""
    with torch.no_grad():
        expected = graph(example)
        expected = expected if isinstance(expected, tuple) else (expected, torch.zeros(1))
        if fmt == "torchscript":
            got = torch.jit.load(str(path))(example)
        else:
            try:
                import onnxruntime as ort
            except ImportError:
                return None
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = [torch.from_numpy(a) for a in session.run(None, {input_name: example.numpy()})]
    got = got if isinstance(got, (tuple, list)) else (got,)
    if len(got) == 1:
        got = (got[0], torch.zeros(1))
    return tuple(float((a - b).abs().max()) for a, b in zip(expected, got))


def export_fastai(model_dir: Path, out: Path) -> Path:
    """model.pkl written anew from the folder's model.pth and config.json (no pickle is read), as
    train writes it: for a model.pkl that fastai's load_learner cannot open, or none. Only train's
    own model.pkl is replaced; any other existing file is left as it is."""
    from stampcheck.train.learner import learner_for

    if (out.exists() or out.is_symlink()) and out.resolve() != (model_dir / LEARNER_NAME).resolve():
        raise ValueError(f"{out} exists and is not the model's own {LEARNER_NAME}; it is left as it is "
                         "(choose another --out)")
    out = out.absolute()  # fastai writes the export under the learner's own (temporary) path otherwise
    refuse_held(out.parent, "the folder")
    config, model = load_model_dir(model_dir)
    with lock_output(out.parent, "export", "the folder"), tempfile.TemporaryDirectory() as tmp:
        remove_own_partials(out.parent, re.escape(out.name))
        export_learner(learner_for(model, config, Path(tmp)), config, out)
    return out
