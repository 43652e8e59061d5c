"""Rendering the synthetic world: draw frames with numpy, encode them with PyAV.

Frames are float32 RGB in [0, 255] while composed, uint8 when encoded. Encoding is single
threaded with bit-exact muxing, so a seed always gives byte-identical files.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from pipelines.synth.world import COLORS, ShotSpec, VideoSpec, sample_world, world_truth

MUXERS = {"mp4": "mp4", "mkv": "matroska", "webm": "webm", "avi": "avi"}
ENCODERS: dict[str, tuple[str, dict[str, str]]] = {
    "h264": ("libx264", {"preset": "ultrafast", "crf": "23"}),
    "hevc": ("libx265", {"preset": "ultrafast", "crf": "26",
                         "x265-params": "log-level=error:pools=none:frame-threads=1"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}),
    "mpeg4": ("mpeg4", {}),
}
TRUNCATE_FRACTION = 0.3
GARBAGE_BYTES = 48_000
TEXTURE_AMPLITUDE = (7.0, 6.0)  # x stripes, y gradient; ± around the background colour
ANGLE_STEP = 3  # spinning masks are cached per this many degrees
STAR_INNER_RADIUS = 0.45


def render_world(out_dir: str | os.PathLike, n_videos: int = 24, seed: int = 0,
                 duration_s: float = 10.0, max_side: int = 320, progress: bool = True) -> dict:
    """Render ``n_videos`` videos and ``truth.json`` into ``out_dir``; return the truth dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos = sample_world(seed, n_videos, duration_s, max_side)
    for video in tqdm(videos, desc="synth", unit="video", disable=not progress):
        write_video(out / video.file, video)
    truth = world_truth(seed, videos)
    tmp = out / "truth.json.tmp"
    tmp.write_text(json.dumps(truth, indent=2) + "\n")
    os.replace(tmp, out / "truth.json")
    return truth


def write_video(path: Path, video: VideoSpec) -> None:
    """Write one file: encoded video, or the broken variant its spec asks for."""
    tmp = path.with_name(path.name + ".tmp")
    if video.broken == "zero_bytes":
        tmp.write_bytes(b"")
    elif video.broken == "garbage":
        tmp.write_bytes(np.random.default_rng(video.byte_seed).bytes(GARBAGE_BYTES))
    else:
        encode_frames(tmp, video, video_frames(video))
        if video.broken == "truncated":
            data = tmp.read_bytes()
            tmp.write_bytes(data[: int(len(data) * TRUNCATE_FRACTION)])
    os.replace(tmp, path)


def encode_frames(path: Path, video: VideoSpec, frames: Iterator[np.ndarray]) -> None:
    """Encode RGB frames at presentation index i -> pts i in time base 1/fps."""
    import av

    encoder, options = ENCODERS[video.fmt.codec]
    muxer = MUXERS[video.fmt.container]
    with av.open(str(path), "w", format=muxer, options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(encoder, rate=video.fps)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, video.fmt.pix_fmt
        stream.codec_context.thread_count = 1
        if encoder == "mpeg4":
            stream.bit_rate = 12 * video.width * video.height
        stream.options = dict(options)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# ---------------------------------------------------------------------------- frames


def video_frames(video: VideoSpec) -> Iterator[np.ndarray]:
    """All ``n_frames`` frames of a video, (H, W, 3) uint8, transitions blended in."""
    painters = [ShotPainter(shot, video.width, video.height) for shot in video.shots]
    for layers in frame_weights(video):
        if len(layers) == 1 and layers[0][1] == 1.0:  # a clean frame
            rgb = painters[layers[0][0]].frame(layers[0][2])
        else:
            rgb = np.zeros((video.height, video.width, 3), np.float32)
            for shot_index, weight, local in layers:
                rgb += weight * painters[shot_index].frame(local)
        yield np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


Layer = tuple[int, float, int]  # (shot index, weight, local frame of that shot)


def frame_weights(video: VideoSpec) -> list[list[Layer]]:
    """Per frame, the layers drawn into it: one shot at weight 1 on clean frames, both shots
    on dissolve frames, one shot dimmed towards black on fade frames."""
    plan: list[list[Layer]] = []
    for i, shot in enumerate(video.shots):
        plan += [[(i, 1.0, j - shot.start_frame)] for j in range(shot.start_frame, shot.end_frame)]
        if i < len(video.transitions):
            plan += _transition_layers(video, i)
    assert len(plan) == video.n_frames, (len(plan), video.n_frames)
    return plan


def _transition_layers(video: VideoSpec, i: int) -> list[list[Layer]]:
    """Layers of the transitional frames between shot ``i`` and shot ``i + 1``.

    A dissolve cross-fades linearly; a fade dims the old shot to black over the first half of
    the span and brightens the new one over the second half. Neither reaches weight 0 or 1
    inside the span, so its first and last frames already differ from the clean frames.
    """
    t, old, new = video.transitions[i], video.shots[i], video.shots[i + 1]
    layers = []
    for j in range(t.start_frame, t.end_frame):
        p = (j - t.start_frame + 1) / (t.end_frame - t.start_frame + 1)  # in (0, 1)
        out_layer = (i, 1 - p, j - old.start_frame)
        in_layer = (i + 1, p, j - new.start_frame)
        if t.kind == "dissolve":
            layers.append([out_layer, in_layer])
        elif p < 0.5:
            layers.append([(i, 1 - 2 * p, out_layer[2])])
        else:
            layers.append([(i + 1, 2 * p - 1, in_layer[2])])
    return layers


# ---------------------------------------------------------------------------- shots


class ShotPainter:
    """Draws the frames of one shot at any local frame index (negative or past its end too,
    which dissolves and fades need)."""

    def __init__(self, shot: ShotSpec, width: int, height: int):
        self.shot, self.width, self.height = shot, width, height
        self._xs = np.arange(width, dtype=np.float32)
        self._ys = np.arange(height, dtype=np.float32)
        self._frozen: np.ndarray | None = None
        self._still_background: np.ndarray | None = None  # without a pan it never changes

    def frame(self, local: int) -> np.ndarray:
        """(H, W, 3) float32 frame at ``local`` frames after the shot's first clean frame."""
        defects = self.shot.defects
        if "black" in defects:
            return np.zeros((self.height, self.width, 3), np.float32)
        if "noise" in defects:
            rng = np.random.default_rng([self.shot.noise_seed, local + 2**20])
            return rng.integers(0, 256, (self.height, self.width, 3)).astype(np.float32)
        if "frozen" in defects:
            if self._frozen is None:
                self._frozen = self._scene(0)
            return self._frozen
        return self._scene(local)

    def _scene(self, local: int) -> np.ndarray:
        """Background texture plus objects, seen through the (maybe panning) camera."""
        shot = self.shot
        cam_x = shot.pan_speed * local - shot.shift[0]
        cam_y = -shot.shift[1]
        if shot.pan_speed:
            rgb = self._background(cam_x, cam_y)
        else:
            if self._still_background is None:
                self._still_background = self._background(cam_x, cam_y)
            rgb = self._still_background.copy()
        for obj in shot.objects:
            scale = float(np.clip(obj.scale0 + obj.dscale * local, 0.3, 2.0))
            diameter = max(3, int(round(obj.diameter * scale)))
            angle = int(round((obj.angle0 + obj.spin * local) / ANGLE_STEP)) * ANGLE_STEP % 360
            mask = shape_mask(obj.shape, diameter, angle)
            cx = obj.x + obj.vx * local - cam_x
            cy = obj.y + obj.vy * local - cam_y
            paste(rgb, mask, cx, cy, np.array(COLORS[obj.color], np.float32))
        if shot.brightness != 1.0:
            rgb *= shot.brightness
        return rgb

    def _background(self, cam_x: float, cam_y: float) -> np.ndarray:
        """Solid named colour with faint stripes along x and a faint wave along y."""
        lx, px, ly, py = self.shot.texture
        amp_x, amp_y = TEXTURE_AMPLITUDE
        tex_x = amp_x * np.sin(2 * np.pi * (self._xs + cam_x) / lx + px)  # (W,)
        tex_y = amp_y * np.cos(2 * np.pi * (self._ys + cam_y) / ly + py)  # (H,)
        rgb = np.empty((self.height, self.width, 3), np.float32)
        for channel, level in enumerate(COLORS[self.shot.background]):  # per channel: fast
            np.add((tex_y + level)[:, None], tex_x[None, :], out=rgb[:, :, channel])
        return rgb


def paste(rgb: np.ndarray, mask: np.ndarray, cx: float, cy: float, color: np.ndarray) -> None:
    """Alpha-blend ``color`` through ``mask`` (d, d) centred at (cx, cy), clipped to the frame."""
    d = mask.shape[0]
    x0, y0 = int(round(cx - d / 2)), int(round(cy - d / 2))
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + d, rgb.shape[1]), min(y0 + d, rgb.shape[0])
    if fx0 >= fx1 or fy0 >= fy1:
        return
    alpha = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0, None]  # (h, w, 1)
    region = rgb[fy0:fy1, fx0:fx1]
    region += (color - region) * alpha


@lru_cache(maxsize=8192)
def shape_mask(shape: str, diameter: int, angle: int) -> np.ndarray:
    """(diameter, diameter) float32 coverage in [0, 1], 2x2 supersampled, rotated by ``angle``°."""
    n = 2 * diameter
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1  # pixel centres in [-1, 1]
    px, py = np.meshgrid(coords, coords)
    if shape == "circle":
        inside = px**2 + py**2 <= 1.0
    else:
        vx, vy = _polygon(shape, angle)
        inside = _inside_polygon(px, py, vx, vy)
    return inside.reshape(diameter, 2, diameter, 2).mean(axis=(1, 3)).astype(np.float32)


def _polygon(shape: str, angle: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of a shape inscribed in the unit circle, pointing up, then rotated."""
    corners = {"square": 4, "triangle": 3, "hexagon": 6, "star": 10}[shape]
    theta = -np.pi / 2 + np.arange(corners) * 2 * np.pi / corners + np.deg2rad(angle)
    if shape == "square":
        theta += np.pi / 4
    radius = np.ones(corners)
    if shape == "star":
        radius[1::2] = STAR_INNER_RADIUS
    vx, vy = radius * np.cos(theta), radius * np.sin(theta)
    if shape == "triangle":  # shrink and move down so the upright bounding box is centred
        rad = np.deg2rad(angle)
        vx, vy = 0.87 * vx - 0.22 * np.sin(rad), 0.87 * vy + 0.22 * np.cos(rad)
    return vx, vy


def _inside_polygon(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over the points."""
    inside = np.zeros(px.shape, bool)
    for i in range(len(vx)):
        x1, y1, x2, y2 = vx[i], vy[i], vx[i - 1], vy[i - 1]
        crosses = (y1 > py) != (y2 > py)
        x_at = (x2 - x1) * (py - y1) / (y2 - y1 + 1e-12) + x1
        inside ^= crosses & (px < x_at)
    return inside
