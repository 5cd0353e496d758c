"""Extract: find every face in every frame, fit 68 landmarks, align, and write crops, masks and alignments.json.

Input: a video file or a folder of images. Output folder:
    alignments.json            schema 1 (docs/stages.md): per frame, every face, largest first; [] for no face
    faces/<frame>_<i>.png      aligned crops (size x size, head-centred by default)
    masks/<kind>/<frame>_<i>.png   landmark-hull masks in crop coordinates (components, extended)
    frames/<frame>.png         only with save_frames

The stage can be killed at any moment: finished frames are checkpointed to `.alignments.partial.json`
(atomically) and a re-run with the same input and parameters resumes after the last checkpoint.
alignments.json itself appears only when every frame is done.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from deid.core.atomic import writable_folder, write_json
from deid.core.hashing import hash_input
from deid.core.settings import as_plain
from deid.models.alignment import crop_matrix, hull_mask, transform_points, warp_face
from deid.models.detectors import FaceBox, FaceDetector, make_detector
from deid.models.device import resolve_device
from deid.models.landmarks import IdentityModel, LandmarkModel, Rect
from deid.stages.extract_config import ExtractConfig
from deid.stages.image_file import write_image
from deid.stages.media import MediaInfo, iter_frames, probe
from deid.stages.progress import make_progress

log = logging.getLogger("deid.extract")

SCHEMA = 1
PARTIAL = ".alignments.partial.json"
CHECKPOINT_SECONDS = 10.0


@dataclass
class _Models:
    detector: FaceDetector
    landmarks: LandmarkModel
    identity: IdentityModel | None


@dataclass
class _Track:
    """The faces of the previous processed frame, for detect_every > 1."""

    rects: list[Rect] = field(default_factory=list)
    centres: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def extract(input_path: Path, out_dir: Path, config: ExtractConfig, device: str = "auto",
            progress: bool = True, checkpoint_seconds: float = CHECKPOINT_SECONDS,
            allow_damaged: bool = False) -> dict[str, Any]:
    """Run the stage; returns the summary recorded in the manifest."""
    info = probe(input_path, allow_damaged)
    out_dir = Path(out_dir)
    writable_folder(out_dir)
    input_hash = hash_input(info.path)
    params = as_plain(config)

    state = _load_partial(out_dir, input_hash, params)
    frames: dict[str, list[dict]] = state["frames"]
    next_frame = state["next_frame"]
    if next_frame:
        log.info("resuming %s after frame %d (%d frames already done)", info.path, next_frame - 1, len(frames))

    models = _load_models(config, device)
    start = time.perf_counter()
    processed = 0
    last_checkpoint = time.monotonic()
    total = len(range(0, info.frames, config.every)) if info.frames else None
    bar = make_progress(total, f"extract {info.path.name}", "frame", progress, initial=len(frames))
    track = _Track()
    decoded = 0
    # Image encoding releases the GIL, so one writer thread overlaps PNG writes with detection.
    with _Writer() as writer:
        try:
            for batch in _batches(iter_frames(info, config.every), config.batch_size, skip_before=next_frame):
                decoded = batch[-1][0] + 1
                for (index, image), faces in zip(batch, _find_faces(batch, models, config, track)):
                    frames[str(index)] = _write_faces(writer, out_dir, index, image, faces, models, config)
                    if config.save_frames:
                        writer.image(out_dir / "frames" / f"{index:06d}.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                processed += len(batch)
                bar.update(len(batch))
                if time.monotonic() - last_checkpoint > checkpoint_seconds:
                    writer.wait()  # a checkpoint may only name faces that are on disk
                    write_json(out_dir / PARTIAL, {"sha256": input_hash, "params": params,
                                                   "next_frame": decoded, "frames": frames}, indent=None)
                    last_checkpoint = time.monotonic()
        finally:
            bar.close()
    decoded = max(decoded, next_frame)
    seconds = time.perf_counter() - start

    frame_count = _decoded_count(info, decoded, config.every)
    alignments = {
        "schema": SCHEMA,
        "video": {**info.as_json(), "sha256": input_hash, "frames": frame_count},
        "extractor": {"detector": config.detector, "landmarks": "dlib68", "size": config.size,
                      "centering": config.centering, "every": config.every, "detect_every": config.detect_every,
                      "min_face_size": config.min_face_size, "min_score": config.min_score, "detect_scale": config.detect_scale,
                      "masks": list(config.masks)},
        "frames": {k: frames[k] for k in sorted(frames, key=int)},
    }
    write_json(out_dir / "alignments.json", alignments)
    (out_dir / PARTIAL).unlink(missing_ok=True)
    return _summarise(info, alignments, processed, seconds)


def _load_partial(out_dir: Path, input_hash: str, params: dict) -> dict[str, Any]:
    fresh = {"next_frame": 0, "frames": {}}
    path = out_dir / PARTIAL
    if not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return fresh
    if state.get("sha256") != input_hash or state.get("params") != params:
        log.info("ignoring %s: it was made from another input or other parameters", path)
        return fresh
    return {"next_frame": int(state["next_frame"]), "frames": state["frames"]}


def _load_models(config: ExtractConfig, device: str) -> _Models:
    torch_device = resolve_device(device)
    detect_min = max(12, int(round(config.min_face_size * config.detect_scale)))
    return _Models(detector=make_detector(config.detector, torch_device, detect_min),
                   landmarks=LandmarkModel(),
                   identity=IdentityModel() if config.identity else None)


def _batches(frames: Iterable[tuple[int, np.ndarray]], size: int,
             skip_before: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    batch: list[tuple[int, np.ndarray]] = []
    for index, image in frames:
        if index < skip_before:
            continue
        batch.append((index, image))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _find_faces(batch: list[tuple[int, np.ndarray]], models: _Models, config: ExtractConfig,
                track: _Track) -> list[list[tuple[FaceBox, np.ndarray]]]:
    """Faces of each frame as (detection, 68 landmarks), largest first.

    With detect_every = k > 1 only every k-th frame is run through the detector; the frames between
    re-fit the landmarks on the previous frame's boxes, moved with the face (a landmark tracker).
    """
    positions = [index // config.every for index, _ in batch]
    to_detect = [i for i, pos in enumerate(positions) if pos % config.detect_every == 0 or not track.rects]
    detected = dict(zip(to_detect, _detect(models.detector, [batch[i][1] for i in to_detect], config.detect_scale)))
    results = []
    for i, (_, image) in enumerate(batch):
        if i not in detected and not track.rects:
            detected[i] = _detect(models.detector, [image], config.detect_scale)[0]
        if i in detected:
            kept = [face for face in detected[i] if min(face.rect.w, face.rect.h) >= config.min_face_size
                    and (models.detector.name != "mtcnn" or face.score >= config.min_score)]
            rects = [models.detector.landmark_rect(face) for face in kept]
            faces = [(face, models.landmarks.predict(image, rect)) for face, rect in zip(kept, rects)]
        else:
            faces, rects = _track_faces(image, models.landmarks, track)
        track.rects = rects
        track.centres = [lm.mean(0) for _, lm in faces]
        track.scores = [face.score for face, _ in faces]
        results.append(faces)
    return results


def _track_faces(image: np.ndarray, landmarks: LandmarkModel,
                 track: _Track) -> tuple[list[tuple[FaceBox, np.ndarray]], list[Rect]]:
    faces, rects = [], []
    for rect, centre, score in zip(track.rects, track.centres, track.scores):
        points = landmarks.predict(image, rect)
        # Move the box with the face and fit again, so fast motion does not drag the landmarks.
        dx, dy = points.mean(0) - centre
        rect = Rect(rect.x + dx, rect.y + dy, rect.w, rect.h)
        points = landmarks.predict(image, rect)
        faces.append((FaceBox(rect, score, tracked=True), points))
        rects.append(rect)
    return faces, rects


def _detect(detector: FaceDetector, images: list[np.ndarray], scale: float) -> list[list[FaceBox]]:
    if not images:
        return []
    if scale >= 1.0:
        return detector.detect(images)
    small = [cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for im in images]
    return [[_scale_face(face, 1.0 / scale) for face in faces] for faces in detector.detect(small)]


def _scale_face(face: FaceBox, factor: float) -> FaceBox:
    r = face.rect
    return FaceBox(Rect(r.x * factor, r.y * factor, r.w * factor, r.h * factor), face.score,
                   None if face.keypoints is None else face.keypoints * factor, face.tracked)


class _Writer:
    """Writes images on one background thread; `wait` re-raises the first failure."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deid-writer")
        self._pending: list[Future] = []

    def image(self, path: Path, image: np.ndarray) -> None:
        self._pending.append(self._pool.submit(write_image, path, image))
        if len(self._pending) > 256:  # bound memory if the disk is slower than detection
            self.wait()

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _write_faces(writer: _Writer, out_dir: Path, index: int, image: np.ndarray, faces: list[tuple[FaceBox, np.ndarray]],
                 models: _Models, config: ExtractConfig) -> list[dict]:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    records = []
    for i, (face, landmarks) in enumerate(faces):
        name = f"{index:06d}_{i}.png"
        matrix = crop_matrix(landmarks, config.size, config.centering)
        writer.image(out_dir / "faces" / name, warp_face(bgr, matrix, config.size))
        crop_landmarks = transform_points(landmarks, matrix)
        masks = {}
        for kind in config.masks:
            masks[kind] = f"masks/{kind}/{name}"
            writer.image(out_dir / masks[kind], hull_mask(crop_landmarks, config.size, kind))
        r = face.rect
        record: dict[str, Any] = {
            "box": [round(float(v), 2) for v in (r.x, r.y, r.w, r.h)],
            "score": round(float(face.score), 5),
            "landmarks": np.round(landmarks.astype(np.float64), 2).tolist(),
            "matrix": np.round(matrix, 6).tolist(),
            "face": f"faces/{name}",
            "masks": masks,
        }
        if face.tracked:
            record["tracked"] = True
        if face.keypoints is not None:
            record["keypoints"] = np.round(face.keypoints.astype(np.float64), 2).tolist()
        if models.identity is not None:
            record["identity"] = np.round(models.identity.embed(image, landmarks), 6).tolist()
        records.append(record)
    return records


def _decoded_count(info: MediaInfo, decoded: int, every: int) -> int:
    # With every > 1 the last decoded index undercounts the stream; ffprobe's packet count is the truth
    # for videos, the file list for folders.
    return max(decoded, info.frames) if every > 1 else decoded


def _summarise(info: MediaInfo, alignments: dict, processed: int, seconds: float) -> dict[str, Any]:
    frames = alignments["frames"]
    counts = [len(faces) for faces in frames.values()]
    with_faces = sum(1 for c in counts if c)
    summary = {
        "frames": len(frames),
        "frames_with_faces": with_faces,
        "frames_with_one_face": sum(1 for c in counts if c == 1),
        "faces": int(sum(counts)),
        "seconds": round(seconds, 2),
        "frames_per_second": round(processed / seconds, 2) if seconds > 0 and processed else None,
    }
    if info.damage:
        summary["damaged_input"] = info.damage
    detector = alignments["extractor"]["detector"]
    min_size = alignments["extractor"]["min_face_size"]
    if with_faces == 0:
        log.warning("no face found in %d/%d frames of %s (detector %s, min size %d px)",
                    len(frames), len(frames), info.path, detector, min_size)
    else:
        log.info("%s: %d/%d frames with faces, %d faces", info.path.name, with_faces, len(frames), summary["faces"])
    return summary
