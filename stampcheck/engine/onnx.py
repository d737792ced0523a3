"""The ONNX back-end: an exported model.onnx (and its verifier) run by onnxruntime, without torch.
The file carries the model's config in its metadata, checked as a model folder's config.json is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from stampcheck.engine.config import (META_KEY, ONNX_NAME, VERIFIER_WEIGHTS, ModelError, config_problem,
                                      judging_threshold)
from stampcheck.engine.second_look import LookConfig
from stampcheck.files import open_regular


def source_digest(model_dir: Path) -> str | None:
    """sha256 of the weights and config an export was made from, or None when they are not there;
    an export whose digest differs from its folder's is stale (the folder was trained again)."""
    h = hashlib.sha256()
    try:
        for name in ("model.pth", "config.json", VERIFIER_WEIGHTS):
            if name == VERIFIER_WEIGHTS and not (Path(model_dir) / name).exists():
                continue  # a one-stage model
            with open_regular(Path(model_dir) / name) as f:  # a named pipe there must not block the load
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def verifier_file(export: Path) -> Path:
    """Where an export's verifier graph lies: beside it, ``NAME.verifier.SUFFIX``."""
    return export.with_name(f"{export.stem}.verifier{export.suffix}")


class OnnxModel:
    """An exported model.onnx run by onnxruntime: the engine of a PC without torch.

    ``path`` is the file or the model folder holding it. The file carries the model's config
    (classes, input size, threshold) in its metadata, so it is enough on its own."""

    def __init__(self, path: Path, device: str | None = None, threshold: float | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelError("the onnx engine needs onnxruntime: pip install 'stampcheck[runtime]'") from e
        path = Path(path)
        if path.is_dir():
            path = path / ONNX_NAME
        if not path.is_file():  # onnxruntime opens it itself: a named pipe would block it
            raise ModelError(f"{path} {'is not a regular file' if path.exists() else 'not found'}; "
                             "make it with `stampcheck export MODEL`")
        available = ort.get_available_providers()
        gpu = "CUDAExecutionProvider" in available and (device in (None, "", "auto") or str(device).startswith("cuda"))
        if device not in (None, "", "auto", "cpu") and not gpu:
            raise ModelError(f"device {device!r}: this onnxruntime runs on {', '.join(available)}")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # onnxruntime's warnings are for its developers
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
            meta = json.loads(self.session.get_modelmeta().custom_metadata_map[META_KEY])
            self.config, made_from = meta["config"], meta["source_sha256"]
            self.input, scores = self.session.get_inputs()[0], self.session.get_outputs()[0]
        except Exception as e:  # a truncated file, another tool's ONNX: onnxruntime's own errors vary
            raise ModelError(f"{path} is not a stampcheck export ({type(e).__name__}: {str(e)[:200]}); "
                             "make one with `stampcheck export MODEL`") from e
        # the file is anyone's: its config is held to config.json's rules before a photo is read
        problem = config_problem(self.config)
        if problem:
            raise ModelError(f"{path}: the config in its metadata cannot be used: {problem}; "
                             "make the file again with `stampcheck export MODEL`")
        self.classes = list(self.config["classes"])
        self.size = self.config["size"]
        # torch's exporter may leave the class axis symbolic (a name): then only the input is held to the config
        classes_axis = scores.shape[-1] if scores.shape and isinstance(scores.shape[-1], int) else len(self.classes)
        if self.input.shape[1:] != [3, self.size, self.size] or classes_axis != len(self.classes):
            raise ModelError(f"{path}: its graph takes {self.input.shape} and gives scores {scores.shape}, its "
                             f"config says {self.size} px and {len(self.classes)} classes; make the file again "
                             "with `stampcheck export MODEL`")
        digest = source_digest(path.parent)
        if digest and digest != made_from:
            raise ModelError(f"{path} was exported from other weights than the model.pth beside it "
                             f"(trained again since?); run `stampcheck export {path.parent}` again")
        self.path = path
        self.on_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.look, self.verifier = None, None
        if self.config.get("verifier") is not None:
            self.look = LookConfig.from_dict(self.config["verifier"])
            self.verifier = self._verifier_session(ort, opts, providers)
        self.stored_threshold, self.threshold = judging_threshold(self.config), judging_threshold(self.config, threshold)

    def _verifier_session(self, ort, opts, providers):
        path = verifier_file(self.path)
        if not path.is_file():  # onnxruntime opens it itself: a named pipe would block it
            raise ModelError(f"{self.path} is a two-stage model and its verifier {path} "
                             f"{'is not a regular file' if path.exists() else 'is not beside it'}; copy both "
                             "files, or run `stampcheck export MODEL` again")
        try:
            session = ort.InferenceSession(str(path), opts, providers=providers)
            meta = json.loads(session.get_modelmeta().custom_metadata_map[META_KEY])
            crops, probs = session.get_inputs()[0], session.get_outputs()[0]
        except Exception as e:
            raise ModelError(f"{self.path} is a two-stage model and its verifier {path.name} cannot be used "
                             f"({type(e).__name__}: {str(e)[:160]}); run `stampcheck export MODEL` again") from e
        made_from = json.loads(self.session.get_modelmeta().custom_metadata_map[META_KEY]).get("source_sha256")
        if not isinstance(meta, dict) or meta.get("source_sha256") != made_from:
            raise ModelError(f"{path} was exported from another model than {self.path.name}; "
                             "run `stampcheck export MODEL` again")
        # the crops are cut to the config's size: a graph for others (or a hand-edited size) fails here, not mid-run
        side, answers = self.look.size, 1 + len(self.classes)
        given = probs.shape[-1] if probs.shape and isinstance(probs.shape[-1], int) else answers
        if crops.name != "crops" or crops.shape[1:] != [3, side, side] or given != answers:
            raise ModelError(f"{path}: its graph takes {crops.name} {crops.shape} and gives {probs.shape}, the config "
                             f"in {self.path.name} says {side} px crops and {answers} answers; run `stampcheck "
                             "export MODEL` again")
        return session

    def verify(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, 3, s, s) -> the verifier's class probabilities (N, 1 + C), column 0 "none"."""
        return self.verifier.run(None, {"crops": np.ascontiguousarray(crops, dtype=np.uint8)})[0]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, 3, S, S) -> scores (B, HW, C) and boxes (B, HW, 4) in input pixels."""
        scores, boxes = self.session.run(None, {self.input.name: np.ascontiguousarray(batch, dtype=np.uint8)})
        return scores, boxes
