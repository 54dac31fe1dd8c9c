"""Surviving interruption: the full training state (model, optimizer, scheduler, scaler, RNG
and loop position) saved atomically, and Ctrl-C / SIGTERM turned into "save, then stop"."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

from nlu_deploy.errors import NluDeployError

STATE_FILE = "training_state.pt"
BEST_DIR = "best"  # the best epoch's weights so far, as a Hugging Face checkpoint


class TrainingInterrupted(NluDeployError):
    """Training stopped on a signal after saving its state."""

    def __init__(self, message: str, signal_name: str = "SIGINT") -> None:
        super().__init__(message)
        self.signal_name = signal_name


def training_state_dir(output: Path) -> Path:
    """Where an unfinished run keeps its state: beside the output, hidden, stable across runs."""
    output = Path(output)
    return output.parent / f".{output.name}.training"


def fingerprint(options: dict[str, Any], data_checksums: dict[str, str]) -> str:
    """What must match for a resume to continue the same run."""
    text = json.dumps({"options": options, "data": data_checksums}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StopOnSignal:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step; a second Ctrl-C
    aborts at once. Handlers are only installed from the main thread (Python's rule)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def save_training_state(
    directory: Path,
    model,
    optimizer,
    scheduler,
    scaler,
    progress: dict,
    epoch_generator_state,
    run_fingerprint: str,
    averaged=None,
) -> None:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "fingerprint": run_fingerprint,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python_rng": random.getstate(),
        "epoch_generator": epoch_generator_state,
        "progress": progress,
    }
    if averaged is not None:  # finetune --average-weights: the moving average, with its update count
        state["averaged"] = averaged.state_dict()
    partial = directory / f"{STATE_FILE}.partial"
    try:
        torch.save(state, partial)
    except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError
        partial.unlink(missing_ok=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NluDeployError(
            f"the training state could not be saved in {directory} ({reason}); is the disk "
            "full? The previous saved state, if any, is kept."
        ) from None
    os.replace(partial, directory / STATE_FILE)  # a crash mid-save keeps the previous state


def load_training_state(directory: Path, run_fingerprint: str) -> dict:
    import torch

    path = directory / STATE_FILE
    if not path.exists():
        raise NluDeployError(f"there is no interrupted run to resume ({path} does not exist).")
    # weights_only: our own file, but never unpickle arbitrary objects from disk (a file that
    # asks for any other object is refused by torch's restricted unpickler, and runs nothing).
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, refused globals: many types
        raise NluDeployError(
            f"{path} is not a training state this tool wrote ({str(exc).strip().splitlines()[0][:200]}); "
            "pass --overwrite to start over."
        ) from None
    if not isinstance(state, dict) or not all(key in state for key in ("fingerprint", "torch_rng", "python_rng")):
        raise NluDeployError(f"{path} is not a training state this tool wrote; pass --overwrite to start over.")
    if state["fingerprint"] != run_fingerprint:
        raise NluDeployError(
            f"the interrupted run in {directory} used other options or data; resume with the same "
            "command, or pass --overwrite to start over."
        )
    return state


def restore_rng(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
