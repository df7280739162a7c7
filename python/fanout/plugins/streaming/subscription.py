"""What a watching viewer gets, changed while it watches: ``configure`` (which streams are
sent, with which playout delay) and ``switch`` (another mountpoint on the same PeerConnection). Sans-IO: these read
requests and tracks; the plugin tells the engine."""

from __future__ import annotations

from typing import Any

from fanout.plugins.streaming.errors import StreamingError, StreamingErrorCode
from fanout.plugins.streaming.mountpoint import Mountpoint
from fanout.plugins.streaming.viewer import ViewerTrack

Errors = StreamingErrorCode


def send_choices(body: dict[str, Any], tracks: list[ViewerTrack]) -> list[tuple[ViewerTrack, bool]]:
    """What a ``configure`` request asks to send: ``streams: [{"mid", "send"}]`` or the legacy
    ``audio``/``video`` booleans, as (track, send) pairs."""
    choices: list[tuple[ViewerTrack, bool]] = []
    streams = body.get("streams")
    if streams is not None:
        if not isinstance(streams, list):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (streams should be an array)")
        for entry in streams:
            if not isinstance(entry, dict):
                raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (streams should be an array of objects)")
            mid = entry.get("mid")
            if not isinstance(mid, str):
                raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (mid)")
            track = next((track for track in tracks if track.mid == mid), None)
            if track is None:
                raise StreamingError(Errors.INVALID_ELEMENT, f"No such mid '{mid}' in this subscription")
            send = entry.get("send")
            if send is not None:
                if not isinstance(send, bool):
                    raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (send should be a boolean)")
                choices.append((track, send))
        return choices
    for kind in ("audio", "video"):
        send = body.get(kind)
        if send is None:
            continue
        if not isinstance(send, bool):
            raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({kind} should be a boolean)")
        choices += [(track, send) for track in tracks if track.stream.kind == kind]
    return choices


def playout_delay_choices(
    body: dict[str, Any], tracks: list[ViewerTrack]
) -> list[tuple[ViewerTrack, int | None, int | None]]:
    """What a ``configure`` request asks of the playout delay, as (track, min_delay,
    max_delay) in Janus's 10 ms units (None: not given): top-level ``min_delay``/``max_delay``
    for every video track, then those of ``streams: [{"mid", ...}]`` entries for theirs.
    Audio has no playout delay: entries for audio mids are ignored, as Janus does.
    Validates everything before anything changes."""
    choices: list[tuple[ViewerTrack, int | None, int | None]] = []
    minimum, maximum = _delay(body, "min_delay"), _delay(body, "max_delay")
    if minimum is not None or maximum is not None:
        choices += [(track, minimum, maximum) for track in tracks if track.stream.kind == "video"]
    streams = body.get("streams")
    if isinstance(streams, list):  # send_choices checked the entries and their mids
        for entry in streams:
            minimum, maximum = _delay(entry, "min_delay"), _delay(entry, "max_delay")
            track = next((track for track in tracks if track.mid == entry.get("mid")), None)
            if track is not None and track.stream.kind == "video" and (minimum is not None or maximum is not None):
                choices.append((track, minimum, maximum))
    return choices


def _delay(body: dict[str, Any], key: str) -> int | None:
    """An integer or nothing. Janus 1.1.2 takes any JSON here and a non-integer counts as 0
    (it replies ``configured``); fanout refuses it, as Janus refuses mistyped elements elsewhere."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({key} should be an integer)")
    return value


def data_choice(body: dict[str, Any], data_mid: str | None) -> tuple[dict[str, Any], bool | None]:
    """The ``configure`` body without what it says about the data stream, and what it says:
    a ``streams`` entry for the data m-line's mid, or the legacy ``data`` boolean (None: nothing)."""
    send: bool | None = None
    streams = body.get("streams")
    if isinstance(streams, list) and data_mid is not None:
        kept = []
        for entry in streams:
            if isinstance(entry, dict) and entry.get("mid") == data_mid:
                value = entry.get("send")
                if value is not None and not isinstance(value, bool):
                    raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (send should be a boolean)")
                send = value if value is not None else send
            else:
                kept.append(entry)
        body = body | {"streams": kept}
    elif streams is None and "data" in body:
        if not isinstance(body["data"], bool):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (data should be a boolean)")
        send = body["data"] if data_mid is not None else None
    return body, send


def switched_tracks(tracks: list[ViewerTrack], target: Mountpoint) -> list[ViewerTrack]:
    """The viewer's tracks fed by ``target``'s streams: each takes the first unused stream of
    its kind and codec. Raises if ``target`` cannot feed one of them (no renegotiation)."""
    unused = list(target.config.streams)
    switched = []
    for track in tracks:
        stream = next(
            (s for s in unused if s.kind == track.stream.kind and s.codec.name == track.stream.codec.name), None
        )
        if stream is None:
            raise StreamingError(
                Errors.CANT_SWITCH,
                f"Can't switch: mountpoint {target.id} has no {track.stream.codec.name} stream for mid '{track.mid}'",
            )
        unused.remove(stream)
        switched.append(track.switched_to(stream))
    return switched


LAYER_KEYS = ("substream", "temporal", "fallback")
# VP9 (one stream, its layers told by its payload descriptor): Janus's VP9-SVC keys;
# ``temporal`` is taken too.
SVC_LAYER_KEYS = ("temporal_layer", "spatial_layer")


def layer_choices(body: dict[str, Any], tracks: list[ViewerTrack]) -> list[tuple[ViewerTrack, dict[str, int]]]:
    """Which simulcast substream and temporal layer a ``configure`` request asks for, per
    track: ``substream``/``temporal``/``fallback`` at the top level (for ``mid``, or every
    simulcast track without one) or in ``streams: [{"mid", ...}]`` entries. Tracks that are
    not simulcast are left out, as Janus ignores the keys for them, but for VP9 tracks,
    which take ``temporal_layer`` (Janus's VP9-SVC key, or ``temporal``), ``spatial_layer``
    (as ``spatial``) and ``adaptive``, and AV1 tracks, which take ``temporal_layer`` (Janus's
    key for AV1-SVC in its VideoRoom, or ``temporal``) and ``adaptive``."""
    requests: list[tuple[list[ViewerTrack], dict[str, Any]]] = []
    mid = body.get("mid")
    if mid is not None and not isinstance(mid, str):
        raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (mid should be a string)")
    top = [track for track in tracks if mid is None or track.mid == mid]
    requests.append((top, body))
    streams = body.get("streams")
    if isinstance(streams, list):
        for entry in streams:
            if isinstance(entry, dict):
                requests.append(([track for track in tracks if track.mid == entry.get("mid")], entry))
    choices: list[tuple[ViewerTrack, dict[str, int]]] = []
    for chosen, request in requests:
        layers: dict[str, int] = {}
        given: dict[str, int] = {}
        for key in (*LAYER_KEYS, *SVC_LAYER_KEYS):
            value = request.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({key} should be a positive integer)")
            given[key] = value
            if key in LAYER_KEYS:
                layers[key] = value
        svc_layers: dict[str, int] = {}
        vp9_temporal = given.get("temporal_layer", given.get("temporal"))
        if vp9_temporal is not None:
            svc_layers["temporal"] = vp9_temporal
        if "spatial_layer" in given:
            svc_layers["spatial"] = given["spatial_layer"]
        adaptive = request.get("adaptive")
        if adaptive is not None:
            if not isinstance(adaptive, bool):
                raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (adaptive should be a boolean)")
            layers["adaptive"] = svc_layers["adaptive"] = int(adaptive)
        for track in chosen:
            if track.stream.simulcast and layers:
                choices.append((track, layers))
            elif track.stream.codec.name == "vp9" and svc_layers:
                choices.append((track, svc_layers))
            elif track.stream.codec.name == "av1" and svc_layers.keys() - {"spatial"}:
                choices.append((track, {key: value for key, value in svc_layers.items() if key != "spatial"}))
    return choices
