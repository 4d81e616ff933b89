"""Versioned analytic models in a run directory: `model_v{N}.pt` files plus a `requests.jsonl` log.

Writes are atomic (temporary file, then a no-clobber link), so a failed or refused request never changes a
stored model; every unlearning request, done or refused, is appended to `requests.jsonl`. When the directory
is also a run of the run store (`run.sqlite`), each version is recorded there as an artifact
(`model_v{N}`, kind `analytic-model`) and each request as an `unlearn` event.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from lifelong.analytic import ANALYTIC
from lifelong.errors import LifelongError
from lifelong.tracking.files import save_torch_atomic

_VERSION = re.compile(r"^model_v(\d+)\.pt$")
REQUESTS = "requests.jsonl"
TRAIN_FEATURES = "train_features.pt"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def resolve_run_dir(run: str | Path) -> Path:
    """A run directory given as a path, or as a name under $LIFELONG_RUNS (default ./runs)."""
    p = Path(run)
    if p.is_dir():
        return p
    q = Path(os.environ.get("LIFELONG_RUNS", "runs")) / str(run)
    if q.is_dir():
        return q
    raise LifelongError(f"run '{run}' not found (neither a directory nor {q})")


def model_versions(run_dir: str | Path) -> list[int]:
    d = Path(run_dir)
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _VERSION.match(p.name))) if d.is_dir() else []


def model_payload(model: Any, meta: dict | None = None, version: int = 1, **extra: Any) -> dict:
    """The content of a `model_v{N}.pt`: the model's state, meta data, creation time, version and `extra`
    entries (a strategy's run adds `backbone`, the frozen feature extractor's weights)."""
    return {"state": model.state_dict(), "meta": dict(meta or {}), "created": _now(), "version": version, **extra}


def save_model_version(run_dir: str | Path, model: Any, meta: dict | None = None, **extra: Any) -> tuple[int, Path]:
    """Store `model.state_dict()` as the next `model_v{N}.pt`; returns (N, path). Never overwrites."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    payload = model_payload(model, meta, 0, **extra)
    tmp = d / f".model.tmp{os.getpid()}"
    try:
        for _ in range(100):
            n = (model_versions(d) or [0])[-1] + 1
            payload["version"] = n
            torch.save(payload, tmp)
            final = d / f"model_v{n}.pt"
            try:
                os.link(tmp, final)  # fails if another writer took this version
            except FileExistsError:
                continue
            _record(d, lambda rs, n=n, final=final: rs.add_artifact(f"model_v{n}", final, "analytic-model"))
            return n, final
        raise LifelongError(f"could not allocate a new model version in {d}")  # pragma: no cover
    finally:
        if tmp.exists():
            tmp.unlink()


def load_model_version(run_dir: str | Path, version: int | None = None) -> tuple[Any, int, dict]:
    """(model or raw state for non-analytic kinds, version, payload) of `version` (default: the latest)."""
    d = Path(run_dir)
    versions = model_versions(d)
    if not versions:
        trained_by = ""
        if (d / "run.sqlite").is_file():
            from lifelong.tracking.store import RunStore

            rs = RunStore.open(d)
            try:
                strategy = (rs.meta().get("config") or {}).get("strategy")
            finally:
                rs.close()
            exact = ", ".join(k for k, c in ANALYTIC.items() if c.supports_unlearning)
            trained_by = f" (a run of {strategy}, which stores none; exact unlearning needs a run of {exact})"
        raise LifelongError(f"no stored model (model_v*.pt) in {d}{trained_by}")
    v = versions[-1] if version is None else int(version)
    if v not in versions:
        raise LifelongError(f"run {d} has no model version {v} (has {', '.join(map(str, versions))})")
    path = d / f"model_v{v}.pt"
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise LifelongError(f"model file {path} cannot be read ({type(err).__name__}); it is damaged") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state"), dict):
        raise LifelongError(f"model file {path} is damaged: it holds no model state")
    state = payload["state"]
    kind = state.get("kind")
    if kind not in ANALYTIC:
        return state, v, payload
    try:
        return ANALYTIC.get(kind).from_state_dict(state), v, payload
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise LifelongError(f"model file {path} is damaged: its '{kind}' state cannot be loaded ({err})") from None


def _record(run_dir: Path, write) -> None:
    """Apply `write(RunStore)` when `run_dir` is a run of the run store; the model files stay authoritative."""
    if not (run_dir / "run.sqlite").is_file():
        return
    from lifelong.tracking.store import RunStore

    rs = RunStore.open(run_dir)
    try:
        write(rs)
    finally:
        rs.close()


def check_requests_log(run_dir: str | Path) -> Path:
    """The run's requests.jsonl path; a symbolic link (or anything but a plain file) there is refused."""
    p = Path(run_dir) / REQUESTS
    if p.is_symlink() or (p.exists() and not p.is_file()):
        raise LifelongError(f"{p} is a symbolic link or not a file; refusing to write through it")
    return p


def append_request(run_dir: str | Path, record: dict) -> None:
    """Append `record` to requests.jsonl (never through a symbolic link) and to the run store's events."""
    rec = {"time": _now(), **record}
    p = check_requests_log(run_dir)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with open(fd, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise LifelongError(f"cannot append to {p}: {err.strerror}") from None
    _record(Path(run_dir), lambda rs: rs.add_event("unlearn", rec))


def read_requests(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / REQUESTS
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def save_samples(path: str | Path, features: torch.Tensor, labels: torch.Tensor, ids: Any = None) -> None:
    """A samples file for `lifelong unlearn --samples` (or the run's training features for --classes)."""
    obj = {"features": torch.as_tensor(features), "labels": torch.as_tensor(labels)}
    if ids is not None:
        obj["ids"] = list(ids.tolist() if hasattr(ids, "tolist") else ids)
    save_torch_atomic(obj, Path(path))


def load_samples(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, list | None]:
    """(features, labels, ids or None) from a .pt (dict) or .npz file with keys features, labels[, ids]."""
    p = Path(path)
    if not p.is_file():
        raise LifelongError(f"samples file not found: {p}")
    try:
        if p.suffix == ".npz":
            import numpy as np

            with np.load(p, allow_pickle=False) as z:
                obj = {k: z[k] for k in z.files}
        else:
            obj = torch.load(p, weights_only=True)
    except Exception as e:
        raise LifelongError(f"cannot read samples file {p}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or "features" not in obj or "labels" not in obj:
        raise LifelongError(f"samples file {p} must hold 'features' and 'labels' (and optionally 'ids')")
    ids = obj.get("ids")
    if ids is not None:
        ids = list(ids.tolist() if hasattr(ids, "tolist") else ids)
    return torch.as_tensor(obj["features"]), torch.as_tensor(obj["labels"]), ids


def load_id_list(path: str | Path) -> list:
    """Sample ids from a .json list or a .txt file (one id per line or comma-separated); digits become ints."""
    p = Path(path)
    if not p.is_file():
        raise LifelongError(f"samples file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LifelongError(f"{p} is not UTF-8 text") from None
    if p.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise LifelongError(f"{p} is not valid JSON: {e}") from None
        if not isinstance(raw, list):
            raise LifelongError(f"{p} must hold a JSON list of sample ids")
    else:
        raw = [t.strip() for line in text.splitlines() for t in line.split(",") if t.strip()]
    ids = [int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v for v in raw]
    bad = [v for v in ids if isinstance(v, bool) or not isinstance(v, (int, str))]
    if bad:
        raise LifelongError(f"{p}: sample ids must be integers or strings, not {bad[0]!r}")
    if not ids:
        raise LifelongError(f"{p} lists no sample id")
    return ids


def select_ids(samples: tuple, wanted: list, source: Path) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The rows of a (features, labels, ids) samples file whose ids are `wanted`; all must be present."""
    x, y, ids = samples
    if ids is None:
        raise LifelongError(f"{source} holds no sample ids; give the samples themselves with --samples FILE.pt")
    pos = {k: i for i, k in enumerate(ids)}
    missing = [k for k in wanted if k not in pos]
    if missing:
        raise LifelongError(
            f"{len(missing)} of the {len(wanted)} sample ids are not in {source} (first: {missing[0]!r})"
        )
    rows = torch.tensor([pos[k] for k in wanted], dtype=torch.int64)
    return x[rows], y[rows], list(wanted)


def run_training_samples(run_dir: str | Path, payload: dict, classes: list[int] | None = None,
                         ids: list | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(features, labels, ids) of the training samples of `classes` (or with these ledger `ids`) of a run made
    by an analytic strategy: the stream is rebuilt from the run's config (as the engine builds it) and the
    features are recomputed with the stored backbone, chunk by chunk as in training, so they match the
    ledger's digests."""
    from lifelong.analytic.features import experience_features
    from lifelong.tracking.store import DB_NAME, RunStore
    from lifelong.training.config import RunConfig
    from lifelong.training.engine import pick_device

    d = Path(run_dir)
    if "backbone" not in payload or not (d / DB_NAME).is_file():
        raise LifelongError(f"{d} has no {TRAIN_FEATURES} and its model was not trained by an analytic strategy "
                            "run; pass the samples' features with --features FILE")
    rs = RunStore.open(d)
    try:
        meta = rs.checked_meta()
    finally:
        rs.close()
    data, code = meta.get("data") or {}, meta.get("code") or {}
    own = [f"your own data '{data.get('name', '?')}'"] if data.get("source", "scenario") != "scenario" else []
    own += [f"your own {part} {used}" for part, used in code.items() if used]
    if own:  # the stored config alone cannot rebuild them: it would rebuild its default scenario and model
        raise LifelongError(f"run {d} was trained on {' and '.join(own)}, which the CLI cannot rebuild: pass the "
                            "samples' features with --features FILE (or unlearn from Python with the model's "
                            "unlearn methods)")
    cfg = RunConfig.from_dict(meta["config"])
    torch.set_num_threads(cfg.threads)
    try:
        device = pick_device(cfg.device)
    except LifelongError:
        device = torch.device("cpu")
    stream = cfg.make_stream()
    model = cfg.build_model(stream[0].data.shape, stream.num_classes, stream[0].data.default_model)
    model.load_state_dict(payload["backbone"])
    model.to(device)
    if device.type != "cpu":  # as Engine.to_device: experiences that share a dataset keep sharing it
        moved: dict[int, Any] = {}
        for e in stream:
            e.data = moved.setdefault(id(e.data), e.data.to(device))
    source = payload.get("meta", {}).get("features", "backbone")
    wanted = None if ids is None else set(ids)
    xs, ys, out_ids = [], [], []
    for exp in stream:
        if classes is not None and not set(exp.classes) & set(classes):
            continue
        x, y, e_ids = experience_features(model, stream, exp, stream[0].data.prepare, source)
        keep = [i for i, (k, c) in enumerate(zip(e_ids, y.tolist(), strict=True))
                if (classes is None or c in classes) and (wanted is None or k in wanted)]
        rows = torch.tensor(keep, dtype=torch.int64)
        xs.append(x[rows])
        ys.append(y[rows])
        out_ids += [e_ids[i] for i in keep]
    if not xs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64), []
    return torch.cat(xs), torch.cat(ys), out_ids
