"""Recording through the real server, with Python participants (sfu/client.py): the admin API
starts and stops it, every participant is told, and each publisher's file holds the frames
the SFU forwards, byte for byte, muxed with their audio and playable."""

import asyncio
import json

import aiohttp

from sfu import auth
from sfu.app import ROOMS_KEY
from sfu.client import Participant
from tests.conftest import eventually, start_server
from tests.recording import FrameWatcher, digest, read_file

SECRET = "recording-secret-" + "r" * 40
RECORD_S = 6.0


def admin_headers(room: str = "*") -> dict[str, str]:
    return {"Authorization": "Bearer " + auth.mint(SECRET, "ops", room, {"admin"}, 600)}


async def test_recorded_call_has_one_playable_file_per_publisher_with_the_forwarded_frames(tmp_path):
    srv = await start_server(auth_secret=SECRET, allow_open_rooms=True, recording_dir=tmp_path)
    simulcast = Participant(srv.ws_url, "rec", "sim ulcast")  # RTP publisher, three layers
    plain = Participant(srv.ws_url, "rec", "plain")  # aiortc publisher (sends sender reports)
    viewer = FrameWatcher(srv.ws_url, "rec", "viewer")
    try:
        for p in (simulcast, plain, viewer):
            await p.join()
        await simulcast.publish_rtp(simulcast=True, trailer=False)
        await plain.publish()
        room = srv.app[ROOMS_KEY].rooms["rec"]
        # The call runs for a while before the recording starts: it begins mid-call.
        await eventually(
            lambda: viewer.received_from(simulcast.id, "video") > 100 and viewer.received_from(plain.id, "video") > 50,
            timeout=30,
        )
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{srv.url}/admin/rooms/rec/recording", headers=admin_headers("rec")) as r:
                assert r.status == 200, await r.text()
                state = await r.json()
            assert state["active"] and state["whole_room"]
            assert set(state["participants"]) == {simulcast.id, plain.id}
            for p in (simulcast, plain, viewer):
                msg = await p.wait_for(lambda m: m.get("type") == "recording" and m["active"])
                assert set(msg["participants"]) == {simulcast.id, plain.id}
            # Recording wants the top layer of the simulcast video, as a subscriber would.
            recorders = list(room.recording.files.values())
            await eventually(lambda: all(r.writer is not None for r in recorders), timeout=15)
            await asyncio.sleep(RECORD_S)
            async with http.delete(f"{srv.url}/admin/rooms/rec/recording", headers=admin_headers("rec")) as r:
                assert r.status == 200, await r.text()
                state = await r.json()
            assert not state["active"] and state["participants"] == []
            for p in (simulcast, plain, viewer):
                await p.wait_for(lambda m: m.get("type") == "recording" and not m["active"])
            # Unauthorised and unknown: clear errors.
            async with http.post(f"{srv.url}/admin/rooms/rec/recording") as r:
                assert r.status == 401
            async with http.post(f"{srv.url}/admin/rooms/nope/recording", headers=admin_headers()) as r:
                assert r.status == 404
            url = f"{srv.url}/admin/rooms/rec/participants/nobody/recording"
            async with http.post(url, headers=admin_headers()) as r:
                assert r.status == 404 and (await r.json())["code"] == "not-found"

        sidecars = list(tmp_path.glob("*.json"))
        assert len(sidecars) == 1
        sidecar = json.loads(sidecars[0].read_text())
        assert len(sidecar["files"]) == 2, sidecar
        for entry in sidecar["files"]:
            path = tmp_path / entry["file"]
            assert path.suffix == ".webm" and entry["source"] == "camera"
            assert entry["participant"] in path.name and path.name.startswith("rec_")
            content = read_file(path)
            video, audio = content.streams["video"], content.streams["audio"]
            recorded_s = entry["stopped_at"] - entry["started_at"]
            print(entry["file"], entry["timing"], entry["duration_s"], content.duration_s, recorded_s, entry["streams"])
            assert video.keyframes[0], "a recording started mid-call begins with a keyframe"
            assert video.decode_errors == [] and video.decoded >= len(video.packets) - 2, "every frame decodes"
            assert audio.decode_errors == [] and audio.decoded >= len(audio.packets) - 2
            assert abs(video.first_s - audio.first_s) < 0.1, "audio and video start together"
            # The file begins on the first keyframe after the start: the RTP publisher sends one
            # when asked, the aiortc one (a pre-encoded clip) only once a second.
            late_s = 0.5 if entry["participant"] == simulcast.id else 1.5
            assert recorded_s - late_s < content.duration_s < recorded_s + 0.2, (content.duration_s, recorded_s)
            assert abs(entry["duration_s"] - content.duration_s) < 0.2
            # No re-encoding: the file's video packets are the frames the SFU forwarded.
            track = next(s["track"] for s in entry["streams"] if s["kind"] == "video")
            forwarded = viewer.frames[track]
            sample = video.packets[5:-5]
            found = sum(digest(p) in forwarded for p in sample)
            assert len(sample) > 50 and found >= 0.95 * len(sample), (found, len(sample))
        layers = {s["track"]: s["layer"] for e in sidecar["files"] for s in e["streams"] if s["kind"] == "video"}
        simulcast_track = next(t for t in layers if t.startswith(simulcast.id))
        assert layers[simulcast_track] == 2, "the top simulcast layer is recorded"
    finally:
        for p in (simulcast, plain, viewer):
            await p.close()
        await srv.runner.cleanup()
