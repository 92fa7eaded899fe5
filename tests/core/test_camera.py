import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from vla_rl_ros.core.camera import CameraError, CameraSource, parse_source  # noqa: E402


def _video(path, n=5, size=(64, 48)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(n):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, :, 2] = 40 * i  # red channel in BGR
        w.write(frame)
    w.release()


def test_parse_source():
    assert parse_source("0") == 0 and parse_source("rtsp://x/y") == "rtsp://x/y"
    with pytest.raises(CameraError):
        parse_source("  ")


def test_video_file_frames_are_rgb_resized_and_loop(tmp_path):
    p = tmp_path / "v.avi"
    _video(p)
    cam = CameraSource(str(p), width=32, height=24)
    cam.open()
    frames = [cam.read() for _ in range(8)]  # more than the file has: loops
    assert frames[0].shape == (24, 32, 3) and frames[0].dtype == np.uint8
    assert frames[3][..., 0].mean() > frames[0][..., 0].mean()  # red grew: BGR->RGB done
    cam.close()


def test_missing_sources_give_clear_errors(tmp_path):
    with pytest.raises(CameraError, match="no such file"):
        CameraSource(str(tmp_path / "nope.mp4")).open()
    with pytest.raises(CameraError, match="cannot open camera device 57"):
        CameraSource("57").open()
    with pytest.raises(CameraError, match="not open"):
        CameraSource("0").read()


def test_fit_image_keeps_the_aspect_ratio_and_decode_refuses_garbage():
    from vla_rl_ros.core.camera import decode_image, fit_image

    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 80:560] = 255  # a white square of 480x480 in the middle, black bars at the sides
    out = fit_image(img, (96, 96))
    assert out.shape == (96, 96, 3) and out.min() == 255  # the bars were cropped, not squashed in
    tall = fit_image(np.zeros((300, 100, 3), np.uint8), (32, 64))
    assert tall.shape == (32, 64, 3)
    same = np.ones((96, 96, 3), np.uint8)
    assert fit_image(same, (96, 96)) is same
    ok, jpg = cv2.imencode(".jpg", img[:, :, ::-1])
    back = decode_image(jpg.tobytes())
    assert back.shape == (480, 640, 3) and abs(int(back[240, 320, 0]) - 255) < 5
    for bad, msg in ((b"", "empty"), (b"not an image", "does not decode"), (b"x" * 100, "does not decode")):
        with pytest.raises(ValueError, match=msg):
            decode_image(bad)
    with pytest.raises(ValueError, match="limit"):
        decode_image(b"x" * 100, max_bytes=10)
