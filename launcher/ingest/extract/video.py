"""Video with PyAV: a frame from the middle of every interval, plus one text piece of name and metadata.

For each sample time the sampler seeks to the keyframe at or before it. A keyframe within a quarter
interval of the target is taken as it is (one decoded frame per sample, the common case: phones and
cameras put a keyframe every second or two); otherwise decoding goes on up to the target. When
keyframes are sparser than the samples (screen recordings), seeking would decode the same stretch
again and again, so the sampler notices and decodes straight through instead.

Frames are RGB PIL images with the longest side bounded by `render_max_side` (64 frames of 1024 px
16:9 are ~110 MB); `iter_extract` hands them out one at a time.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator

import av
import av.error
from PIL import Image

from launcher.core.records import FileRecord, Locator, Piece
from launcher.ingest.extract.base import ExtractError, ExtractSettings, picture_context
from launcher.ingest.extract.image import check_pixels

log = logging.getLogger(__name__)

_METADATA_KEYS = ("title", "artist", "album", "comment", "description", "creation_time")


def extract_video(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """The metadata piece first, then one image piece per sampled frame (timestamp locator)."""
    try:
        container = av.open(record.path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise ExtractError(f"not a readable video ({_reason(exc)})") from exc
    with container:
        context = picture_context(record, settings)
        stream = container.streams.video[0] if container.streams.video else None
        duration = _duration(container, stream)
        sampling = stream is not None and settings.video_max_frames > 0 and settings.video_interval_s > 0
        if sampling and stream is not None:
            width, height = stream.codec_context.width, stream.codec_context.height
            check_pixels(width, height, settings.max_image_pixels, what="video frames")
        yield Piece(text=_describe(record, container, stream, duration), context=context, modality="text")
        if not sampling or stream is None:
            return  # audio only, or no frames wanted (a text-only model): the name and tags are all there is
        if not settings.decode_media:
            # The read pass: where frames will be taken, without decoding them. The embed pass
            # decodes each frame once, and stores the times the frames really have when they differ
            # (a keyframe near the sample time, or the first frame after it; ingest.pipeline).
            for seconds in _targets(duration, settings)[0]:
                yield Piece(locator=Locator(timestamp=round(seconds, 3)), context=context, modality="image")
            return
        # Frame threading decodes several frames at once; it pays when we decode forward to a target.
        stream.thread_type = "AUTO"
        for seconds, image in _sample(container, stream, duration, settings):
            yield Piece(
                image=image, locator=Locator(timestamp=round(seconds, 3)), context=context, modality="image"
            )


def sample_times(duration: float, interval: float, max_frames: int) -> list[float]:
    """The middle of every `interval` of the video; the interval widens so that at most `max_frames` fit."""
    if max_frames <= 0 or interval <= 0:
        return []
    if duration <= 0:
        return [0.0]
    count = math.ceil(duration / interval)
    if count > max_frames:
        count, interval = max_frames, duration / max_frames
    return [(i * interval + min((i + 1) * interval, duration)) / 2 for i in range(count)]


def _sample(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    duration: float | None,
    settings: ExtractSettings,
) -> Iterator[tuple[float, Image.Image]]:
    """(seconds from the start, frame) for each sample time; stops early at the end of the stream."""
    time_base = stream.time_base
    start = float(stream.start_time * time_base) if stream.start_time is not None and time_base else 0.0
    targets, slack = _targets(duration, settings)
    seek = duration is not None and time_base is not None
    step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.04
    frames = container.decode(stream)
    last = -math.inf  # time of the last frame taken
    seconds = -math.inf  # time of the last frame decoded
    taken = 0
    try:
        for target in targets:
            fresh = False
            # Seek only when the target is well ahead; a short way is cheaper to decode through.
            if seek and time_base is not None and target - seconds > 2 * slack:
                container.seek(int((start + target) / time_base), stream=stream, backward=True)
                frames = container.decode(stream)
                fresh = True
            for frame in frames:
                # A frame without a timestamp is taken to follow the previous one.
                seconds = frame.time - start if frame.time is not None else max(seconds, 0.0) + step
                if fresh:
                    fresh = False
                    if seconds <= last:
                        seek = False  # the seek landed before frames we already had: keyframes are sparse
                    elif seconds >= target - slack:
                        break  # the keyframe is close enough: one decoded frame for this sample
                if seconds >= target:
                    break
            else:
                return  # end of stream
            if seconds <= last:
                continue
            last = seconds
            taken += 1
            yield seconds, _frame_image(frame, settings.render_max_side)
    except av.error.FFmpegError as exc:
        # A damaged stretch ends sampling; frames already taken are still good.
        if taken == 0:
            raise ExtractError(f"corrupt video, no frame could be decoded ({_reason(exc)})") from exc
        log.info("%s: sampling stopped after %d frames: %s", container.name, taken, exc)


def _targets(duration: float | None, settings: ExtractSettings) -> tuple[list[float], float]:
    """The sample times, and how far before one a keyframe may be and still be taken for it."""
    if duration is None:
        # Unknown length: no seeking, decode through and take frames as the sample times pass.
        interval = settings.video_interval_s
        return [(i + 0.5) * interval for i in range(settings.video_max_frames)], interval / 4
    targets = sample_times(duration, settings.video_interval_s, settings.video_max_frames)
    return targets, (targets[1] - targets[0]) / 4 if len(targets) > 1 else duration / 4


def _frame_image(frame: av.VideoFrame, max_side: int) -> Image.Image:
    """The frame as RGB, its longest side bounded, turned upright by the stream's display matrix."""
    width, height = frame.width, frame.height
    scale = min(1.0, max_side / max(width, height, 1))
    image = frame.to_image(width=max(1, round(width * scale)), height=max(1, round(height * scale)))
    rotation = round(getattr(frame, "rotation", 0) or 0) % 360  # counter-clockwise degrees
    if rotation == 90:
        image = image.transpose(Image.Transpose.ROTATE_90)
    elif rotation == 180:
        image = image.transpose(Image.Transpose.ROTATE_180)
    elif rotation == 270:
        image = image.transpose(Image.Transpose.ROTATE_270)
    return image


def _duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream | None
) -> float | None:
    """Seconds, from the stream or else the container; None when neither knows."""
    if stream is not None and stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _describe(
    record: FileRecord,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream | None,
    duration: float | None,
) -> str:
    """The file name and what the container says about itself, for keyword search and the snippet."""
    facts = ["video"]
    if duration is not None:
        facts.append(f"{_clock(duration)} long")
    if stream is not None:
        facts.append(f"{stream.codec_context.width}x{stream.codec_context.height}")
        if stream.average_rate:
            facts.append(f"{float(stream.average_rate):.3g} fps")
        if stream.codec_context.name:
            facts.append(stream.codec_context.name)
    lines = [os.path.basename(record.path), ", ".join(facts)]
    tags = {k.lower(): v for k, v in container.metadata.items()}
    lines += [f"{key.replace('_', ' ')}: {tags[key]}" for key in _METADATA_KEYS if tags.get(key)]
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    """1:02:03 or 2:03."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _reason(exc: BaseException) -> str:
    """An FFmpeg error as one lowercase line, without the file name PyAV appends."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0].lower()
