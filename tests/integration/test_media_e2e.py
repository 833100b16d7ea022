"""Media jobs end to end on the real stack: upscale and background removal through the ComfyUI
stand-in, resize and convert on the media worker, all four from the CLI; bad sources refused
before anything is charged or started; the books still balance."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from adapters.jobs import JobsClient
from domain.errors import UserInputError
from domain.jobs import JobState, JobStatus, MediaKind, MediaRequest
from tests.integration.conftest import Stack

pytestmark = pytest.mark.stack


async def new_user(jobs: JobsClient, points: int = 500) -> str:
    identity = f"cli:media-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, identity, points)
    return identity


def disc(size: tuple[int, int] = (96, 64), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """A red disc on a plain light background (something a background remover can cut out),
    or with mode RGBA on a transparent one."""
    bg = (235, 235, 235, 0) if mode == "RGBA" else (235, 235, 235)  # RGBA: a cut-out disc
    im = Image.new(mode, size, bg)
    w, h = size
    ImageDraw.Draw(im).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(200, 30, 30))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A crafted PNG that declares 3.6 gigapixels in a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * width
    idat = zlib.compress(row * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli.main", *argv],
        check=False,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def saved(folder: Path) -> Image.Image:
    [path] = [p for p in folder.rglob("*") if p.is_file()]
    im = Image.open(path)
    im.load()
    return im


def level(channel: Image.Image, xy: tuple[int, int]) -> int:
    value = channel.getpixel(xy)
    assert isinstance(value, int)
    return value


async def run_media(
    jobs: JobsClient, user: str, kind: MediaKind, data: bytes, **params: object
) -> tuple[JobStatus, Image.Image]:
    source = await jobs.store_source(user, data, f"source-{kind}.png")
    started = await jobs.start_media(
        MediaRequest(user=user, kind=kind, source_image_id=source, params=params)
    )
    result = await asyncio.wait_for(jobs.result(started.workflow_id), 60)
    assert result.state is JobState.DONE, result.reason
    [out] = result.outputs
    im = Image.open(io.BytesIO(await asyncio.to_thread(jobs.image, out)))
    im.load()
    return result, im


# ---- the four commands -----------------------------------------------------------------------


async def test_the_cli_upscales_an_image_exactly_four_times(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    user = await new_user(jobs)
    src = tmp_path / "small.png"
    src.write_bytes(disc((64, 48)))
    out = tmp_path / "out"
    proc = await asyncio.to_thread(
        cli, dev_stack, "upscale", str(src), "--scale", "4", "--user", user, "--out", str(out)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    im = saved(out)
    assert (im.format, im.size) == ("PNG", (256, 192))
    assert "source small.png: PNG 64x48" in proc.stdout
    assert "price 10" in proc.stdout and "balance 500 -> 490" in proc.stdout
    wid = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("job "))
    assert wid.startswith(f"upscale-{user.replace(':', '-')}-")
    totals = await asyncio.to_thread(jobs.stores.ledger.job_totals, wid)
    assert (totals.charges, totals.refunds) == (1, 0)
    assert totals.gpu_seconds is not None and totals.gpu_seconds > 0, "GPU time is booked"


async def test_an_upscale_by_two_uses_the_two_times_model(dev_stack: Stack, jobs: JobsClient):
    user = await new_user(jobs)
    result, im = await run_media(jobs, user, "upscale", disc((50, 30)), scale=2)
    assert im.size == (100, 60)
    assert result.settings["params"] == {"scale": 2}


async def test_the_cli_removes_the_background_into_a_real_alpha_channel(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    user = await new_user(jobs)
    src = tmp_path / "disc.jpg"
    src.write_bytes(disc((96, 64), fmt="JPEG"))
    out = tmp_path / "out"
    proc = await asyncio.to_thread(
        cli, dev_stack, "rmbg", str(src), "--user", user, "--out", str(out)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    im = saved(out)
    assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (96, 64))
    alpha = im.getchannel("A")
    assert level(alpha, (2, 2)) < 32, "the background is transparent"
    assert level(alpha, (48, 32)) > 224, "the disc stays opaque"
    assert "source disc.jpg: JPEG 96x64" in proc.stdout
    assert "balance 500 -> 490" in proc.stdout


async def test_the_cli_resizes_to_fit_and_the_other_modes_give_their_sizes(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    user = await new_user(jobs)
    src = tmp_path / "wide.png"
    src.write_bytes(disc((200, 100)))
    out = tmp_path / "out"
    proc = await asyncio.to_thread(
        cli, dev_stack, "resize", str(src), "--width", "64", "--mode", "fit", "--user", user,
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert saved(out).size == (64, 32)
    assert "price 1" in proc.stdout and "balance 500 -> 499" in proc.stdout
    _, filled = await run_media(
        jobs, user, "resize", disc((200, 100)), width=64, height=64, mode="fill"
    )
    assert filled.size == (64, 64)
    _, exact = await run_media(
        jobs, user, "resize", disc((200, 100)), width=50, height=70, mode="exact"
    )
    assert exact.size == (50, 70)


async def test_the_cli_converts_to_jpeg_on_a_chosen_background_and_to_webp(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    user = await new_user(jobs)
    src = tmp_path / "cut.png"
    src.write_bytes(disc((80, 60), mode="RGBA"))
    out = tmp_path / "out"
    proc = await asyncio.to_thread(
        cli, dev_stack, "convert", str(src), "--to", "jpeg", "--quality", "90",
        "--background", "#00ff00", "--user", user, "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    im = saved(out)
    assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (80, 60))
    r, g, b = im.convert("RGB").getpixel((2, 2))  # type: ignore[misc]
    assert g > 200 and r < 80 and b < 80, "transparency is flattened onto the chosen colour"
    r, g, b = im.convert("RGB").getpixel((40, 30))  # type: ignore[misc]
    assert r > 150 and g < 80, "the opaque disc keeps its colour"
    result, webp = await run_media(jobs, user, "convert", disc((80, 60)), format="webp", quality=85)
    assert (webp.format, webp.size) == ("WEBP", (80, 60))
    assert result.outputs[0].content_type == "image/webp"
    _, lossless = await run_media(
        jobs, user, "convert", disc((80, 60)), format="webp", lossless=True
    )
    assert lossless.format == "WEBP"
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500 - 3


# ---- phone photos (issue 14, item 2) ---------------------------------------------------------


def photo(size: tuple[int, int]) -> bytes:
    """A phone-like JPEG: a gradient with a disc, as Telegram hands a photo over."""
    w, h = size
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    ImageDraw.Draw(im).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(200, 30, 30))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "scale", "out", "price"),
    [
        ((2560, 1707), 2, (5120, 3414), 10 + 2 * 17),  # 17.5 MP: 18 started megapixels
        ((1280, 960), 4, (5120, 3840), 10 + 2 * 19),  # 19.7 MP: 20 started megapixels
    ],
)
async def test_a_phone_photo_upscales_at_full_size_priced_by_its_megapixels(
    dev_stack: Stack,
    jobs: JobsClient,
    size: tuple[int, int],
    scale: int,
    out: tuple[int, int],
    price: int,
) -> None:
    user = await new_user(jobs)
    result, im = await run_media(jobs, user, "upscale", photo(size), scale=scale)
    assert im.size == out, "the whole photo at the model's factor, not shrunk to a cap"
    assert (result.outputs[0].width, result.outputs[0].height) == out
    assert result.price == price
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500 - price


async def test_a_source_too_large_for_the_cap_is_reduced_first_and_says_so(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs)
    result, im = await run_media(jobs, user, "upscale", photo((2600, 2000)), scale=4)
    assert im.size == (5096, 3920), "reduced to 1274x980, then the model's 4x"
    assert result.settings["params"] == {"scale": 4, "input_size": [1274, 980]}
    assert result.price == 10 + 2 * 19


async def test_a_larger_result_costs_more_than_a_small_one(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs, points=1000)
    small, _ = await run_media(jobs, user, "upscale", disc((500, 500)), scale=2)  # 1 MP
    large, _ = await run_media(jobs, user, "upscale", disc((1600, 1600)), scale=2)  # 10.2 MP
    assert (small.price, large.price) == (10, 10 + 2 * 10)


# ---- refusals before anything is charged ------------------------------------------------------


async def test_sources_that_are_not_safe_images_are_refused_before_any_charge(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    user = await new_user(jobs)
    noisy_im = Image.effect_noise((96, 64), 64).convert("RGB")
    buf = io.BytesIO()
    noisy_im.save(buf, "PNG")
    noisy = buf.getvalue()
    too_many_pixels = io.BytesIO()
    Image.new("L", (8000, 5300)).save(too_many_pixels, "PNG")  # 42.4 MP
    bad = {
        "text renamed .png": b"hello, this is not an image\n" * 10,
        "truncated": noisy[: len(noisy) // 2],
        "over 20 MB": disc((16, 16)) + b"\0" * (21 * 1024 * 1024),
        "over 40 MP": too_many_pixels.getvalue(),
        "bomb": png_bomb(),
    }
    for name, data in bad.items():
        with pytest.raises(UserInputError) as err:
            await jobs.store_source(user, data, f"{name}.png")
        assert err.value.message, name
    # The CLI says why and starts nothing.
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture\n")
    proc = await asyncio.to_thread(cli, dev_stack, "upscale", str(fake), "--user", user)
    assert proc.returncode == 2 and "error:" in proc.stderr
    found = await asyncio.to_thread(jobs.stores.users.get, user)
    stored = await asyncio.to_thread(
        jobs.stores.db["images.files"].count_documents, {"metadata.user": found.id}
    )
    assert stored == 0, "nothing is stored for a refused file"
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500
    assert await jobs.list_jobs(user=user) == []


async def test_requests_the_rules_forbid_are_refused_naming_the_limit(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs)
    small = await jobs.store_source(user, disc((64, 64)), "small.png")
    cases: list[tuple[MediaKind, str, dict[str, object], str]] = [
        ("upscale", small, {"scale": 3}, "scale"),
        ("resize", small, {"width": 5000, "mode": "fit"}, "width"),
        ("convert", small, {"format": "gif"}, "format"),
        ("rmbg", "0123456789abcdef01234567", {}, "not found"),
    ]
    for kind, source, params, names in cases:
        with pytest.raises(UserInputError) as err:
            await jobs.start_media(
                MediaRequest(user=user, kind=kind, source_image_id=source, params=params)
            )
        assert names in err.value.message, (kind, params, err.value.message)
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500
    assert await jobs.list_jobs(user=user) == []


# ---- the same job controls as make image ------------------------------------------------------


async def test_a_media_job_is_listed_shown_and_cancelled_with_a_refund(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs)
    dev_stack.faults(render_time=5.0)
    source = await jobs.store_source(user, disc((64, 64)), "slow.png")
    started = await jobs.start_media(
        MediaRequest(user=user, kind="upscale", source_image_id=source, params={"scale": 2})
    )
    for _ in range(150):
        status = await jobs.status(started.workflow_id)
        if status.state is JobState.RUNNING:
            break
        await asyncio.sleep(0.1)
    assert status.state is JobState.RUNNING, status
    assert status.kind == "upscale" and status.price == 10
    for _ in range(50):
        rows = await jobs.list_jobs(user=user, running=True)
        if rows:
            break
        await asyncio.sleep(0.2)
    assert [(r.workflow_id, r.kind) for r in rows] == [(started.workflow_id, "upscale")]
    result = await jobs.cancel(started.workflow_id)
    assert result.state is JobState.CANCELLED and result.refund == 10
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500


async def test_the_books_still_balance_after_the_media_jobs(dev_stack: Stack, jobs: JobsClient):
    assert await asyncio.to_thread(jobs.stores.ledger.audit) == []
