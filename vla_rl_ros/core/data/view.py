"""Episodes you can look at: one logged episode as a video, a contact sheet, plots and a Rerun recording.

:func:`view_episode` reads one episode of a LeRobot dataset (:func:`~.reader.episode_frames`) and writes
into an output folder

* ``episode.mp4`` -- the camera image(s) side by side at the dataset's fps, with a strip under the
  image: step index, time, reward of the step and whether the task has been solved so far;
* ``contact_sheet.png`` -- ~12 evenly spaced frames of that video in a grid (each with its strip);
* ``overview.png`` -- the contact sheet over plots against the step: joint states, executed action
  vs the commanded mean ``rl.action_mean``, exploration noise (action - mean), ``rl.sigma`` and the
  reward (what to look at first);
* ``episode.rrd`` -- with rerun-sdk (an optional extra, ``requirements/extras.txt``): a Rerun
  recording saved to a file (no viewer, no network): the images and every series as scalars over a
  ``step`` timeline and a ``time`` timeline (the dataset's timestamps, s).

Fields a dataset lacks (e.g. the ``rl.*`` fields of one imported from a real robot) are left out
of the plots and the recording. No rclpy here; PyAV, OpenCV and matplotlib are imported on use.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_rl_ros.core.config import opt, require

from . import schema
from .store import read_info


class ViewError(ValueError):
    """The episode cannot be viewed (no dataset, episode out of range, no images...): one-line message."""


@dataclass(frozen=True)
class ViewConfig:
    """What ``vla-rl-ros view`` writes and how; ``rerun=None``: a recording when rerun-sdk is importable."""

    data: str = opt("", "LeRobot dataset folder", positional=True)
    episode: int = opt(0, "episode index")
    out: str = opt("", "output folder (default: DATA/view/episode_<N>)")
    rerun: bool | None = opt(None, "write a Rerun recording (.rrd); default: when rerun-sdk is installed")
    sheet_frames: int = opt(12, "frames in the contact sheet (evenly spaced)")
    sheet_columns: int = opt(4, "columns of the contact sheet")
    min_image_height: int = opt(240, "small camera images are enlarged (nearest pixel) to at least this height (px)")
    fps_fallback: float = opt(10.0, "frames per second when meta/info.json has none", cli=False)
    codecs: tuple[str, ...] = opt(("libx264", "mpeg4"), "video encoders, first available wins", cli=False)
    mpeg4_bit_rate: int = opt(4_000_000, "bit rate of the mpeg4 fallback encoder (bit/s)", cli=False)
    strip_line_px: int = opt(18, "height of one text line of the strip under the image (px)", cli=False)
    font_scale: float = opt(0.45, "OpenCV font scale of the strip's text (shrunk to fit narrow images)", cli=False)
    sheet_gap_px: int = opt(4, "gap between contact sheet tiles (px)", cli=False)
    figure_width_in: float = opt(12.0, "overview figure width (inches)", cli=False)
    plot_row_in: float = opt(1.7, "height of one plot of the overview (inches)", cli=False)
    dpi: int = opt(100, "overview figure resolution (dots per inch)", cli=False)
    application_id: str = opt("vla_rl_ros", "Rerun application id of the recording", cli=False)

    def validate(self) -> None:
        require(self.episode >= 0, f"episode must be >= 0, got {self.episode}")
        require(self.sheet_frames >= 1, f"sheet_frames must be >= 1, got {self.sheet_frames}")
        require(self.sheet_columns >= 1, f"sheet_columns must be >= 1, got {self.sheet_columns}")
        require(self.min_image_height >= 1, f"min_image_height must be >= 1, got {self.min_image_height}")
        require(self.fps_fallback > 0, f"fps_fallback must be > 0, got {self.fps_fallback}")
        require(len(self.codecs) > 0, "codecs is empty")


#: file names written into the output folder
VIDEO_NAME, SHEET_NAME, OVERVIEW_NAME, RERUN_NAME = "episode.mp4", "contact_sheet.png", "overview.png", "episode.rrd"

#: the extra that provides Rerun, named in the error when it is asked for and missing
RERUN_HINT = "pip install -r requirements/extras.txt"

_GREEN, _GREY, _WHITE, _BLACK = (60, 200, 80), (170, 170, 170), (235, 235, 235), (24, 24, 24)


def rerun_available() -> bool:
    """True when rerun-sdk can be imported."""
    try:
        return importlib.util.find_spec("rerun") is not None
    except (ImportError, ValueError):  # sys.modules["rerun"] = None (tests), a broken install
        return False


def default_out_dir(data: str | Path, episode: int) -> Path:
    """``DATA/view/episode_<N>``."""
    return Path(data) / "view" / f"episode_{int(episode)}"


# ----------------------------------------------------------------------------- loading
@dataclass
class Episode:
    """One episode's arrays as :func:`view_episode` uses them (absent fields: None)."""

    index: int
    task: str
    fps: float
    cameras: list[str]  # camera names (without the image prefix)
    images: list[np.ndarray]  # per camera (N, H, W, 3) uint8
    joint_names: list[str]
    steps: np.ndarray  # (N,) int
    time: np.ndarray  # (N,) s
    state: np.ndarray | None
    action: np.ndarray | None
    action_mean: np.ndarray | None
    sigma: np.ndarray | None
    reward: np.ndarray | None
    success: np.ndarray | None  # (N,) bool, "solved after this step"

    @property
    def n(self) -> int:
        return len(self.steps)

    @property
    def noise(self) -> np.ndarray | None:
        if self.action is None or self.action_mean is None:
            return None
        return self.action - self.action_mean

    @property
    def solved_so_far(self) -> np.ndarray | None:
        return None if self.success is None else np.logical_or.accumulate(self.success.astype(bool))


def load_episode(data: str | Path, episode: int, cfg: ViewConfig = ViewConfig()) -> Episode:
    """Read episode ``episode`` of the dataset at ``data``; :class:`ViewError` when it cannot be viewed."""
    from .reader import episode_frames

    root = Path(data)
    try:
        info = read_info(root)
    except ValueError as e:
        raise ViewError(f"{str(root)!r}: meta/info.json is corrupt ({e})") from e
    if info is None:
        raise ViewError(f"{str(root)!r} is not a LeRobot dataset (no meta/info.json)")
    feats = info["features"]
    cam_keys = [k for k in schema.camera_keys(feats) if k.startswith(schema.IMAGE_PREFIX)]
    if not cam_keys:
        raise ViewError(f"dataset {str(root)!r} has no camera images (no {schema.IMAGE_PREFIX}* feature)")
    total = int(info.get("total_episodes", 0))
    if not 0 <= int(episode) < total:
        raise ViewError(f"episode {episode} out of range: dataset {str(root)!r} has {total} episodes"
                        + (f" (0..{total - 1})" if total else ""))
    try:
        d = episode_frames(root, int(episode))
    except (FileNotFoundError, IndexError, KeyError) as e:
        raise ViewError(str(e).strip("'\"")) from e
    n = len(d[cam_keys[0]])
    if n == 0:
        raise ViewError(f"episode {episode} of {str(root)!r} has no frames")
    fps = float(info.get("fps") or cfg.fps_fallback)

    def get(key, dtype=np.float64):
        return np.asarray(d[key], dtype=dtype) if key in d else None

    names = (feats.get(schema.STATE) or feats.get(schema.ACTION) or {}).get("names")
    dof = next((d[k].shape[1] for k in (schema.STATE, schema.ACTION) if k in d and d[k].ndim == 2), 0)
    joint_names = [str(x) for x in names] if isinstance(names, (list, tuple)) and len(names) == dof \
        else [f"joint{i}" for i in range(dof)]
    steps = np.asarray(d["frame_index"], dtype=np.int64) if "frame_index" in d else np.arange(n)
    time = get("timestamp")
    return Episode(
        index=int(episode), task=str(d.get("task", "")), fps=fps,
        cameras=[k[len(schema.IMAGE_PREFIX):] for k in cam_keys], images=[d[k] for k in cam_keys],
        joint_names=joint_names, steps=steps, time=time if time is not None else steps / fps,
        state=get(schema.STATE), action=get(schema.ACTION), action_mean=get(schema.ACTION_MEAN),
        sigma=get(schema.SIGMA), reward=get(schema.REWARD),
        success=get(schema.SUCCESS, bool),
    )


# ----------------------------------------------------------------------------- frames
def _scale_of(ep: Episode, cfg: ViewConfig) -> int:
    h = max(im.shape[1] for im in ep.images)
    return max(1, math.ceil(cfg.min_image_height / h))


def camera_row(ep: Episode, i: int, scale: int) -> np.ndarray:
    """Frame ``i`` of every camera side by side (all at the tallest camera's height), enlarged
    ``scale`` times (nearest pixel)."""
    import cv2

    h = max(im.shape[1] for im in ep.images)
    tiles = []
    for im in ep.images:
        f = im[i]
        if f.shape[0] != h:
            f = cv2.resize(f, (round(f.shape[1] * h / f.shape[0]), h), interpolation=cv2.INTER_AREA)
        tiles.append(f)
    row = np.concatenate(tiles, axis=1)
    if scale > 1:
        row = cv2.resize(row, (row.shape[1] * scale, row.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(row, dtype=np.uint8)


def strip_lines(ep: Episode, i: int) -> list[list[tuple[str, tuple]]]:
    """The strip's text of frame ``i``: lines of (text, RGB colour) pieces."""
    line1 = [(f"step {int(ep.steps[i])}/{int(ep.steps[-1])}   t {float(ep.time[i]):.2f}s", _WHITE)]
    r = "n/a" if ep.reward is None else f"{float(ep.reward[i]):+.4f}"
    line2 = [(f"reward {r}   ", _WHITE)]
    solved = ep.solved_so_far
    if solved is None:
        line2.append(("success n/a", _GREY))
    elif solved[i]:
        line2.append(("SUCCESS", _GREEN))
    else:
        line2.append(("not solved yet", _GREY))
    return [line1, line2]


def strip_height(cfg: ViewConfig, lines: int = 2) -> int:
    return lines * cfg.strip_line_px + cfg.strip_line_px // 2


def draw_strip(width: int, lines: list[list[tuple[str, tuple]]], cfg: ViewConfig) -> np.ndarray:
    """A dark ``(strip_height, width, 3)`` strip with ``lines`` written on it (font shrunk to fit)."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    strip = np.full((strip_height(cfg, len(lines)), width, 3), _BLACK, np.uint8)
    margin = max(2, cfg.strip_line_px // 4)
    widest = max(cv2.getTextSize("".join(t for t, _ in line), font, cfg.font_scale, 1)[0][0] for line in lines)
    scale = cfg.font_scale * min(1.0, (width - 2 * margin) / max(widest, 1))
    for li, line in enumerate(lines):
        x, y = margin, (li + 1) * cfg.strip_line_px
        for text, colour in line:
            cv2.putText(strip, text, (x, y), font, scale, colour, 1, cv2.LINE_AA)
            x += cv2.getTextSize(text, font, scale, 1)[0][0]
    return strip


def video_frame(ep: Episode, i: int, cfg: ViewConfig, scale: int) -> np.ndarray:
    """Frame ``i`` as the video shows it: the cameras over the strip, padded to even sides (H.264)."""
    img = camera_row(ep, i, scale)
    out = np.concatenate([img, draw_strip(img.shape[1], strip_lines(ep, i), cfg)], axis=0)
    ph, pw = out.shape[0] % 2, out.shape[1] % 2
    if ph or pw:
        out = np.pad(out, ((0, ph), (0, pw), (0, 0)))
    return out


# ----------------------------------------------------------------------------- writers
def pick_codec(cfg: ViewConfig) -> str:
    """The first of ``cfg.codecs`` this PyAV can encode with."""
    import av

    for name in cfg.codecs:
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises its own errors for unknown/decoder-only codecs
            continue
    raise ViewError(f"none of the video encoders {', '.join(cfg.codecs)} is available in PyAV")


def write_video(path: Path, frames, fps: float, cfg: ViewConfig) -> str:
    """Encode ``frames`` (iterable of equal-size RGB uint8 arrays) to an MP4; returns the codec used."""
    from fractions import Fraction

    import av

    codec = pick_codec(cfg)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = None
        for f in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.height, stream.width = f.shape[:2]
                stream.pix_fmt = "yuv420p"
                if codec == "mpeg4":
                    stream.bit_rate = cfg.mpeg4_bit_rate
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        if stream is not None:
            container.mux(stream.encode())
    return codec


def sheet_indices(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` evenly spaced frame indices from first to last."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


def contact_sheet(tiles: list[np.ndarray], cfg: ViewConfig) -> np.ndarray:
    """Equal-size tiles in a grid of ``cfg.sheet_columns`` columns, ``cfg.sheet_gap_px`` apart."""
    cols = min(cfg.sheet_columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles[0].shape[:2]
    g = cfg.sheet_gap_px
    sheet = np.full((rows * h + (rows + 1) * g, cols * w + (cols + 1) * g, 3), 255, np.uint8)
    for j, t in enumerate(tiles):
        r, c = divmod(j, cols)
        y, x = g + r * (h + g), g + c * (w + g)
        sheet[y:y + h, x:x + w] = t
    return sheet


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise ViewError(f"could not write {path}")


def plot_panels(ep: Episode) -> list[tuple[str, list]]:
    """(title, [(values (N,) or (N, dof), style)]) of the overview's plots, for the fields that exist."""
    panels = []
    if ep.state is not None:
        panels.append(("joint state", [(ep.state, "-")]))
    if ep.action is not None:
        series = [(ep.action, "-")]
        title = "action (executed)"
        if ep.action_mean is not None:
            series.append((ep.action_mean, "--"))
            title = "action: executed (solid) vs commanded mean rl.action_mean (dashed)"
        panels.append((title, series))
    if ep.noise is not None:
        panels.append(("exploration noise: action - action_mean", [(ep.noise, "-")]))
    if ep.sigma is not None:
        panels.append(("exploration sigma rl.sigma", [(ep.sigma, "-")]))
    if ep.reward is not None:
        panels.append(("reward", [(ep.reward, "-")]))
    return panels


def write_overview(path: Path, ep: Episode, sheet: np.ndarray, marks: np.ndarray, title: str,
                   cfg: ViewConfig) -> None:
    """The contact sheet over the time plots (matplotlib, Agg canvas: no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = plot_panels(ep)
    sheet_h_in = cfg.figure_width_in * sheet.shape[0] / sheet.shape[1]
    fig = Figure(figsize=(cfg.figure_width_in, sheet_h_in + cfg.plot_row_in * len(panels) + 0.6), dpi=cfg.dpi,
                 layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(1 + len(panels), 1, height_ratios=[sheet_h_in] + [cfg.plot_row_in] * len(panels))
    ax = fig.add_subplot(gs[0])
    ax.imshow(sheet, interpolation="antialiased")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    x = ep.steps
    colours = [f"C{j % 10}" for j in range(max(1, len(ep.joint_names)))]
    first = None
    for pi, (name, series) in enumerate(panels):
        a = fig.add_subplot(gs[1 + pi], sharex=first)
        first = first or a
        for values, style in series:
            v = values.reshape(len(x), -1)
            for j in range(v.shape[1]):
                label = (ep.joint_names[j] if v.shape[1] == len(ep.joint_names) else None) if style == "-" else None
                a.plot(x, v[:, j], style, color=colours[j % len(colours)], lw=1.0, label=label)
        a.set_title(name, fontsize=9, loc="left")
        a.tick_params(labelsize=8)
        a.grid(alpha=0.3)
        for m in marks:
            a.axvline(x[m], color="0.85", lw=0.6, zorder=0)
        if name == "reward" and ep.solved_so_far is not None and ep.solved_so_far.any():
            k = int(np.argmax(ep.solved_so_far))  # half a step either side: visible when solved on the last step
            a.axvspan(x[k] - 0.5, x[-1] + 0.5, color=_rgb01(_GREEN), alpha=0.25, label=f"solved (step {int(x[k])})")
            a.legend(fontsize=7, loc="upper left")
        if pi == 0 and a.get_legend_handles_labels()[0]:  # the joints' colours, once
            a.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if first is not None:
        fig.axes[-1].set_xlabel("step", fontsize=9)
    fig.savefig(str(path), dpi=cfg.dpi)


def _rgb01(c) -> tuple:
    return tuple(v / 255.0 for v in c)


def write_rerun(path: Path, ep: Episode, recording_id: str, cfg: ViewConfig) -> None:
    """A Rerun recording of the episode saved to ``path`` (no viewer, no network): ``camera/<cam>``
    images, ``state/<joint>``, ``action/<joint>/executed`` and ``/mean``, ``noise/<joint>``,
    ``sigma/<joint>``, ``reward``, ``success`` scalars, over the ``step`` and ``time`` timelines."""
    import rerun as rr

    rec = rr.RecordingStream(cfg.application_id, recording_id=recording_id)
    rec.save(str(path))
    rec.set_log_time_enabled(False)
    rec.set_log_tick_enabled(False)
    rec.log("task", rr.TextDocument(ep.task), static=True)
    for i in range(ep.n):
        rec.set_time("step", sequence=int(ep.steps[i]))
        rec.set_time("time", duration=float(ep.time[i]))
        for cam, im in zip(ep.cameras, ep.images):
            rec.log(f"camera/{cam}", rr.Image(im[i]))
    indexes = [rr.TimeColumn("step", sequence=ep.steps), rr.TimeColumn("time", duration=ep.time)]

    def series(entity: str, values: np.ndarray, name: str) -> None:
        rec.log(entity, rr.SeriesLines(names=name), static=True)
        rec.send_columns(entity, indexes=indexes, columns=rr.Scalars.columns(scalars=values.astype(np.float64)))

    vectors = [("state/{}", ep.state), ("action/{}/executed", ep.action), ("action/{}/mean", ep.action_mean),
               ("noise/{}", ep.noise), ("sigma/{}", ep.sigma)]
    for pattern, values in vectors:
        if values is None:
            continue
        for j, joint in enumerate(ep.joint_names[: values.shape[1]]):
            series(pattern.format(joint), values[:, j], f"{pattern.split('/')[0]} {joint}")
    if ep.reward is not None:
        series("reward", ep.reward, "reward")
    if ep.success is not None:
        series("success", ep.solved_so_far.astype(np.float64), "solved so far")
    rec.flush()
    rec.disconnect()


# ----------------------------------------------------------------------------- entry point
def view_episode(cfg: ViewConfig) -> dict[str, Path]:
    """Write the video, contact sheet, overview and (see ``cfg.rerun``) Rerun recording of episode
    ``cfg.episode`` of ``cfg.data``; returns ``{kind: path}`` of what was written.

    Raises:
        ViewError: not a dataset, episode out of range, no images, ``rerun=True`` without rerun-sdk,
            an output folder that cannot be created. Nothing is written before the episode is read.
    """
    use_rerun = rerun_available() if cfg.rerun is None else bool(cfg.rerun)
    if use_rerun and not rerun_available():
        raise ViewError(f"--rerun needs rerun-sdk, which is not installed: {RERUN_HINT}")
    ep = load_episode(cfg.data, cfg.episode, cfg)
    out = Path(cfg.out).expanduser() if cfg.out else default_out_dir(cfg.data, cfg.episode)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ViewError(f"output folder {str(out)!r} cannot be created: {e.strerror or e}") from e
    scale = _scale_of(ep, cfg)
    written: dict[str, Path] = {}

    marks = sheet_indices(ep.n, cfg.sheet_frames)
    tiles = {}

    def frames():
        for i in range(ep.n):
            f = video_frame(ep, i, cfg, scale)
            if i in marks:
                tiles[i] = f
            yield f

    written["video"] = out / VIDEO_NAME
    write_video(written["video"], frames(), ep.fps, cfg)
    sheet = contact_sheet([tiles[i] for i in marks], cfg)
    written["contact_sheet"] = out / SHEET_NAME
    write_png(written["contact_sheet"], sheet)

    solved = ep.solved_so_far
    outcome = "" if solved is None else ("  solved" if solved[-1] else "  not solved")
    ret = "" if ep.reward is None else f"  return {float(ep.reward.sum()):.3f}"
    title = f"{Path(cfg.data).resolve().name}  episode {ep.index}: {ep.task!r}  ({ep.n} steps{ret}{outcome})"
    written["overview"] = out / OVERVIEW_NAME
    write_overview(written["overview"], ep, sheet, marks, title, cfg)

    if use_rerun:
        written["rerun"] = out / RERUN_NAME
        write_rerun(written["rerun"], ep, f"{Path(cfg.data).resolve().name}/episode_{ep.index}", cfg)
    return written
