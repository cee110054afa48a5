"""Profile a few training steps with ``torch.profiler`` and write a short summary (``config id: profile_steps``).

With ``profile_steps: k`` the trainer profiles iterations ``skip + 1 .. skip + k`` of epoch ``epoch`` (default: the
second epoch, so that ``torch.compile`` and ``cudnn.benchmark`` have warmed up in the first) and writes
``profile_summary.json`` and ``profile_summary.md`` into ``out_dir``. ``profile_steps: null`` (the default) attaches
nothing. The profiled epoch is slower than the others (the profiler records every op); its
``train_epoch/volumes_per_s`` is not a throughput figure.

The summary (:func:`summarize_profile`), per profiled step where it says "per step":

- ``top_kernels``: the device kernels with the largest total time (CUDA), or, on a CPU-only run, the operators with
  the largest self CPU time (``top_kernels_kind`` says which).
- ``gpu_idle_share``: with the kernels' busy intervals ``[start, end]`` merged into their union ``U``, over the window
  ``W`` from the first kernel's start to the last kernel's end: ``1 - |U| / |W|`` (the share of the profiled wall
  time in which no kernel ran), plus the longest gaps. ``None`` on a CPU-only run, with the reason.
- ``host_syncs_per_step``: counts of the events by which the host waits for the device, divided by the number of
  profiled steps: ``cudaStreamSynchronize`` / ``cudaDeviceSynchronize`` / ``cudaEventSynchronize`` runtime calls,
  device-to-host copies (``Memcpy DtoH`` device events), and the operators that read a device scalar on the host
  (``aten::_local_scalar_dense``: ``scalar_reads.from_python`` counts the ones made by Python code, ``.item()``,
  ``float(t)``, ``bool(t)``; ``scalar_reads.all`` adds those inside other operators). The CUDA fields are
  ``None`` on a CPU-only run (nothing to wait for); the operator counts are still reported.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)

__all__ = ["StepProfiler", "summarize_profile", "summary_markdown"]

SYNC_RUNTIME_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def _is_device_event(event: Any) -> bool:
    return str(getattr(event, "device_type", "")).endswith(("CUDA", "PrivateUse1"))


def _issued_from_python(event: Any) -> bool:
    """A scalar read (``aten::_local_scalar_dense``) made by Python code (``.item()``, ``float(t)``, ``bool(t)``):
    no ``aten::`` operator above it other than the ``aten::item`` / ``aten::is_nonzero`` that wrap such calls. Reads
    inside another operator (the CPU fused AdamW kernel reads its step counters) do not count."""
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        if parent.name.startswith("aten::") and parent.name not in ("aten::item", "aten::is_nonzero"):
            return False
        parent = getattr(parent, "cpu_parent", None)
    return True


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of ``[start, end]`` intervals as sorted disjoint intervals."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def idle_share(intervals: list[tuple[float, float]], longest: int = 5) -> dict[str, Any]:
    """``1 - |union| / |window|`` of busy intervals (window: first start to last end) and the longest gaps (us)."""
    merged = _merge(intervals)
    if not merged:
        return {"idle_share": None, "window_us": 0.0, "busy_us": 0.0, "longest_gaps_us": []}
    window = merged[-1][1] - merged[0][0]
    busy = sum(e - s for s, e in merged)
    gaps = sorted((b[0] - a[1] for a, b in zip(merged, merged[1:])), reverse=True)
    return {
        "idle_share": (1.0 - busy / window) if window > 0 else 0.0,
        "window_us": window,
        "busy_us": busy,
        "longest_gaps_us": [round(g, 1) for g in gaps[:longest]],
    }


def summarize_profile(events: list[Any], steps: int, cuda: bool, top: int = 15) -> dict[str, Any]:
    """Summary dict of a profiler's ``events()`` over ``steps`` profiled steps (see the module docstring)."""
    if steps <= 0:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device_events = [e for e in events if _is_device_event(e)]
    totals: dict[str, list[float]] = {}
    if cuda and device_events:
        kind = "device kernels by total device time"
        for e in device_events:
            entry = totals.setdefault(e.name, [0.0, 0])
            entry[0] += float(e.time_range.end - e.time_range.start)
            entry[1] += 1
    else:
        kind = "CPU operators by self CPU time (no device activity recorded)"
        for e in events:
            if _is_device_event(e):
                continue
            entry = totals.setdefault(e.name, [0.0, 0])
            entry[0] += float(e.self_cpu_time_total)
            entry[1] += 1
    grand = sum(v[0] for v in totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: kv[1][0], reverse=True)[:top]
    top_rows = [
        {
            "name": name[:120],
            "total_ms": round(t / 1e3, 3),
            "ms_per_step": round(t / 1e3 / steps, 3),
            "calls_per_step": round(n / steps, 2),
            "share": round(t / grand, 4),
        }
        for name, (t, n) in ranked
    ]
    names = [e.name for e in events]
    reads = [e for e in events if e.name == "aten::_local_scalar_dense"]
    scalar_reads = {
        "from_python": sum(1 for e in reads if _issued_from_python(e)) / steps,
        "all": len(reads) / steps,
    }
    summary: dict[str, Any] = {
        "steps": steps,
        "top_kernels_kind": kind,
        "top_kernels": top_rows,
        "host_syncs_per_step": {"scalar_reads": scalar_reads},
    }
    if cuda and device_events:
        gaps = idle_share([(float(e.time_range.start), float(e.time_range.end)) for e in device_events])
        summary["gpu_idle_share"] = gaps.pop("idle_share")
        summary["gpu_timeline"] = gaps
        summary["gpu_idle_share_reason"] = None
        summary["host_syncs_per_step"].update(
            {
                "sync_calls": {c: names.count(c) / steps for c in SYNC_RUNTIME_CALLS},
                "memcpy_dtoh": sum(1 for e in device_events if "DtoH" in e.name) / steps,
                "reason": None,
            }
        )
    else:
        reason = "CPU-only run: no device kernels were recorded" if not cuda else "no device events were recorded"
        summary["gpu_idle_share"] = None
        summary["gpu_timeline"] = None
        summary["gpu_idle_share_reason"] = reason
        summary["host_syncs_per_step"].update({"sync_calls": None, "memcpy_dtoh": None, "reason": reason})
    return summary


def summary_markdown(summary: dict[str, Any], title: str = "Training-step profile") -> str:
    """A short markdown rendering of :func:`summarize_profile`'s dict."""
    syncs = summary["host_syncs_per_step"]
    idle = summary["gpu_idle_share"]
    lines = [
        f"### {title}",
        "",
        f"Profiled steps: {summary['steps']} (epoch {summary.get('epoch', '?')}, "
        f"iterations {summary.get('first_iteration', '?')}-{summary.get('last_iteration', '?')} of the epoch); "
        f"device: {summary.get('device', '?')}.",
        "",
        "- GPU idle share (no kernel running, first to last kernel): "
        + (f"**{idle:.1%}**" if idle is not None else f"n/a ({summary['gpu_idle_share_reason']})"),
    ]
    if summary.get("gpu_timeline"):
        tl = summary["gpu_timeline"]
        lines.append(
            f"  - window {tl['window_us'] / 1e3:.1f} ms, busy {tl['busy_us'] / 1e3:.1f} ms, longest gaps (ms): "
            + ", ".join(f"{g / 1e3:.2f}" for g in tl["longest_gaps_us"])
        )
    reads = syncs["scalar_reads"]
    lines.append(
        f"- host reads of tensor scalars (`aten::_local_scalar_dense`) per step: {reads['from_python']:g} from Python "
        f"(`.item()`, `float(t)`, `bool(t)`), {reads['all']:g} in all"
    )
    if syncs["sync_calls"] is not None:
        calls = ", ".join(f"`{k}` {v:g}" for k, v in syncs["sync_calls"].items())
        lines.append(
            f"- synchronising runtime calls per step: {calls}; device-to-host copies per step: "
            f"{syncs['memcpy_dtoh']:g}"
        )
    else:
        lines.append(f"- synchronising runtime calls / device-to-host copies per step: n/a ({syncs['reason']})")
    lines += ["", f"Top {len(summary['top_kernels'])} {summary['top_kernels_kind']}:", ""]
    lines += ["| name | ms / step | calls / step | share |", "|---|---|---|---|"]
    for r in summary["top_kernels"]:
        name = r["name"].replace("|", "/")
        lines.append(f"| `{name}` | {r['ms_per_step']:.3f} | {r['calls_per_step']:g} | {r['share']:.1%} |")
    return "\n".join(lines) + "\n"


class StepProfiler:
    """Trainer handler: profile ``steps`` iterations of epoch ``epoch`` after skipping ``skip`` of them.

    Args:
        steps: profiled iterations; ``None`` or ``0`` attaches nothing (the bundles' default, ``profile_steps: null``).
        out_dir: folder for ``profile_summary.json`` / ``profile_summary.md``.
        epoch: the epoch (1-based) profiled; the first is usually compile/benchmark warm-up.
        skip: iterations of that epoch run before profiling starts.
        top: rows of the top-kernels table.

    When the epoch has fewer than ``skip + steps`` iterations, the profile stops at the epoch's end and the summary
    counts the steps actually profiled; an epoch with fewer than ``skip + 1`` iterations profiles nothing and logs a
    warning.
    """

    def __init__(self, steps: int | None, out_dir: str, epoch: int = 2, skip: int = 2, top: int = 15) -> None:
        self.steps = int(steps) if steps else 0
        if self.steps < 0 or int(epoch) < 1 or int(skip) < 0:
            raise ValueError(f"profile_steps must be >= 0, epoch >= 1, skip >= 0; got {steps}, {epoch}, {skip}")
        self.out_dir = Path(out_dir)
        self.epoch = int(epoch)
        self.skip = int(skip)
        self.top = int(top)
        self._prof: Any = None
        self._first = 0
        self._done = 0
        self.summary: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        if self.steps == 0:
            return
        engine.add_event_handler(Events.ITERATION_STARTED, self._maybe_start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_stop)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_end)

    def _iteration_in_epoch(self, engine: Engine) -> int:
        length = engine.state.epoch_length or 1
        return (engine.state.iteration - 1) % length + 1

    def _cuda(self, engine: Engine) -> bool:
        device = getattr(engine.state, "device", None)
        return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()

    def _maybe_start(self, engine: Engine) -> None:
        if self._prof is not None or self.summary is not None or engine.state.epoch != self.epoch:
            return
        if self._iteration_in_epoch(engine) != self.skip + 1:
            return
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self._cuda(engine):
            activities.append(ProfilerActivity.CUDA)
            torch.cuda.synchronize()
        self._first = self._iteration_in_epoch(engine)
        self._done = 0
        self._prof = profile(activities=activities)
        self._prof.__enter__()

    def _maybe_stop(self, engine: Engine) -> None:
        if self._prof is None:
            return
        self._done += 1
        if self._done >= self.steps:
            self._finish(engine)

    def _epoch_end(self, engine: Engine) -> None:
        if self._prof is not None:
            self._finish(engine)
        elif engine.state.epoch == self.epoch and self.summary is None:
            logger.warning(
                "profile_steps: epoch %d has %d iterations, fewer than skip + 1 = %d: nothing profiled",
                self.epoch,
                engine.state.epoch_length,
                self.skip + 1,
            )

    def _finish(self, engine: Engine) -> None:
        cuda = self._cuda(engine)
        if cuda:
            torch.cuda.synchronize()
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        summary = summarize_profile(list(prof.events()), self._done, cuda, top=self.top)
        summary.update(
            epoch=self.epoch,
            first_iteration=self._first,
            last_iteration=self._first + self._done - 1,
            device=str(getattr(engine.state, "device", "cpu")),
            torch=torch.__version__,
        )
        self.summary = summary
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "profile_summary.json").write_text(json.dumps(summary, indent=1))
        (self.out_dir / "profile_summary.md").write_text(summary_markdown(summary))
        logger.info("profile of %d training steps written to %s", self._done, self.out_dir / "profile_summary.md")
