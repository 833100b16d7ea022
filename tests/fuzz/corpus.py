"""The generated bad-input corpus: prompts, settings, images, template graphs, collection input.

Everything is built in memory and deterministically (no files, no downloads), so a failing case
can be named and rebuilt. Each generator yields `(label, value)` pairs; the label is what a
failure message shows. The hypothesis strategies at the end are for the fast domain-level run.
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st
from PIL import Image

from domain.settings import SETTING_NAMES
from templates import bundled_template_files
from tests.media.corpus import animated_gif, crafted_png, encode, noise

# ---- prompts ---------------------------------------------------------------------------------

CONTROL_CHARS = "".join(chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127)) + "\u200b"


def bad_prompts(scale: int = 1) -> Iterator[tuple[str, Any]]:
    """Prompts every entry point must refuse: empty, blank, only control characters, too long
    (2001+ characters, also in astral-plane unicode), and values that are not text at all."""
    yield "empty", ""
    yield "spaces", "   "
    yield "whitespace mix", " \t\n\r \u3000\u00a0 "
    yield "only control chars", "\x00\x01\x07\x1b\x7f"
    yield "control + whitespace", "\x00 \t \x1f\n"
    yield "zero-width only", "\u200b\u200c\u200d\ufeff"
    yield "2001 chars", "a" * 2001
    yield "2001 after trim", " " + "b" * 2001 + " "
    yield "10k chars", "cat " * 2500
    yield "1 MB", "x" * (1 << 20)
    yield "2001 emoji", "🦊" * 2001
    yield "2001 CJK", "猫" * 2001
    yield "combining marks", "e" + "\u0301" * 2500
    yield "rtl override long", "\u202e" + "z" * 2001
    yield "none", None
    yield "int", 42
    yield "float nan", math.nan
    yield "bytes", b"a cat"
    yield "list", ["a", "cat"]
    yield "dict", {"prompt": "a cat"}
    yield "bool", True
    rng = random.Random(7)
    for i in range(20 * scale):
        n = rng.randint(2001, 6000)
        alphabet = rng.choice(["ab ", "🦊猫é ", CONTROL_CHARS + "x", "\U0001f600\U00010348 "])
        body = "".join(rng.choice(alphabet) for _ in range(n))
        yield f"random long #{i} ({n + 2})", "x" + body + "x"  # visible ends: nothing trims
    for i in range(10 * scale):
        n = rng.randint(1, 50)
        yield f"random blank #{i}", "".join(rng.choice(CONTROL_CHARS + " \t\n") for _ in range(n))


def odd_good_prompts() -> Iterator[tuple[str, str]]:
    """Odd prompts that are valid: they must be accepted (cleaned), not refused."""
    yield "exactly 2000", "c" * 2000
    yield "quotes and braces", '"}]{ "class_type": "x" } \\n [[trait]]'
    yield "emoji", "a 🦊 in the snow"
    yield "control inside", "a\x00cat\x07"


# ---- trained models and checkpoints (issue 13: hijacked prompts, price walk-arounds) ----------


def bad_trigger_words() -> Iterator[tuple[str, Any]]:
    """Trigger words that could turn up in anyone's prompt by chance, or are not one word."""
    for word in ("of", "in", "cat", "the", "a", "it", "zxq"):
        yield f"short {word!r}", word
    for word in ("castle", "Dragon", "WITH", "houses", "running", "windows"):
        yield f"dictionary {word!r}", word
    yield "two words", "red fox"
    yield "starts with a digit", "9lives"
    yield "33 characters", "z" * 33
    yield "regex chars", "zq.*"
    yield "lora tag", "<lora:x>"
    yield "control char", "zq\x00fox"
    yield "only spaces", "    "


def lora_stacking_prompts(limit: int, names: list[str]) -> Iterator[tuple[str, str]]:
    """Prompts that name more trained models than `limit`, or ones that do not exist (or are
    someone else's private model), each of which must be refused before any charge."""
    tags = [f"<lora:{n}>" for n in names]
    yield f"{limit + 1} tags", "a fox " + " ".join(tags[: limit + 1])
    yield "every tag twice, mixed case", "a fox " + " ".join(t.upper() for t in tags * 2)
    yield "1000 tags", "a fox " + "<lora:ghost>" * 1000
    yield "unknown name", "a fox <lora:ghost>"
    yield "name with regex", "a fox <lora:.*>"
    yield "weight out of range", f"a fox <lora:{names[0]}:99>"
    yield "weight not a number", f"a fox <lora:{names[0]}:nan>"
    yield "only tags", " ".join(tags[:1])


BAD_CHECKPOINTS: list[str] = [
    "flux1-dev.safetensors",  # another family than the sdxl template's
    "../../models/checkpoints/x.safetensors",
    "sdxl-base-1.0.safetensors\x00",
    "SDXL-BASE-1.0.SAFETENSORS",
    "x" * 200,
    "nope.ckpt",
]


# ---- settings --------------------------------------------------------------------------------

HUGE = 10**30
BAD_VALUES: dict[str, list[Any]] = {
    "width": [0, -8, 255, 1025, 4096, 1000.5, "abc", "", None, math.nan, math.inf, HUGE, True, [1]],
    "height": [7, 100000, -1, "1e3", math.nan, -math.inf, HUGE, False, {"a": 1}],
    "steps": [0, -1, 10**6, 1.5, "many", None, math.nan, math.inf, HUGE, True, [30]],
    "cfg": [-0.1, 30.1, 7.25, "x", None, math.nan, math.inf, -math.inf, HUGE, True, "nan"],
    "strength": [-0.01, 1.01, "strong", math.nan, math.inf, None, HUGE, [0.5]],
    "batch": [0, -3, 7, 100, 2.5, "two", None, math.nan, HUGE, True],
    "seed": [-2, 2**32, 2**64, HUGE, -HUGE, 1.5, "lucky", math.nan, math.inf, None],
    "sampler": ["", "nope", 3, None, "x" * 5000, ["euler"], "euler\x00"],
    "scheduler": ["", "warp", 0, None, "karras " * 100],
    "checkpoint": [3, None, "c" * 201, ["a"]],
    "negative": [None, 5, "n" * 1001, "🦊" * 1001, ["a"]],
    "template": [None, 5, "t" * 65, {"x": 1}],
    "send_as_file": ["maybe", 2, None, 1.5, "", [True]],
}
UNKNOWN_KEYS = ["", "colour", "__class__", "$set", "settings.width", "width ", "WIDTH", "a" * 500]


def bad_setting_updates(scale: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """Single bad fields, unknown keys, and bulk updates where one bad field must spoil all."""
    for field, values in BAD_VALUES.items():
        for v in values:
            yield f"{field}={_short(v)}", {field: v}
    for key in UNKNOWN_KEYS:
        yield f"unknown key {key[:20]!r}", {key: 1}
    rng = random.Random(11)
    good = {"steps": 20, "cfg": 5.0, "width": 512, "height": 768, "sampler": "heun"}
    for i in range(15 * scale):
        bad_field = rng.choice(list(BAD_VALUES))
        update = dict(rng.sample(sorted(good.items()), rng.randint(1, len(good))))
        update[bad_field] = rng.choice(BAD_VALUES[bad_field])
        yield f"bulk #{i} with bad {bad_field}", update


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:21] + "..."


# ---- images ----------------------------------------------------------------------------------


def _png_header(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("cat.png", b"not really")
    return buf.getvalue()


def bad_images(scale: int = 1, *, with_huge: bool = True) -> Iterator[tuple[str, bytes]]:
    """Bytes `media.safety.load_image` must refuse: truncated, bombs, wrong types, huge
    declared dimensions, zero-size, and random garbage."""
    good_png = encode(noise("RGB", (64, 48)), "PNG")
    good_jpeg = encode(noise("RGB", (64, 48)), "JPEG", quality=90)
    good_gif = animated_gif([(255, 0, 0), (0, 255, 0)])
    good_webp = encode(noise("RGB", (64, 48)), "WEBP", quality=80)
    yield "empty", b""
    yield "one byte", b"\x89"
    yield "png signature only", good_png[:8]
    for name, data in (
        ("png", good_png),
        ("jpeg", good_jpeg),
        ("gif", good_gif),
        ("webp", good_webp),
    ):
        # (a GIF cut at 90% still holds its whole first frame, which is all that is used)
        for frac in (0.1, 0.3, 0.5) if name == "gif" else (0.1, 0.3, 0.5, 0.9):
            yield f"truncated {name} at {frac:.0%}", data[: int(len(data) * frac)]
    yield "bomb 60000x60000 png", crafted_png(60_000, 60_000)
    yield "bomb 20000x20000 png", crafted_png(20_000, 20_000)
    yield "huge declared 7000x7000 (49 MP)", _png_header(7000, 7000)
    yield "huge declared 1x50M", _png_header(1, 50_000_000)
    yield "zero width png", _png_header(0, 10)
    yield "zero height png", _png_header(10, 0)
    yield "text file", b"a cat on a mat\n" * 20
    yield "text named png", b"hello, I am cat.png"
    yield "zip", _zip_bytes()
    yield "pdf-ish", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n"
    yield "svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    yield "psd signature", b"8BPS" + b"\0" * 64
    yield "ico signature", b"\x00\x00\x01\x00" + b"\0" * 64
    yield "heic-ish", b"\x00\x00\x00\x18ftypheic" + b"\0" * 32
    yield "html", b"<!doctype html><html><body>cat</body></html>"
    yield "elf", b"\x7fELF" + b"\x02\x01\x01" + b"\0" * 60
    yield "jpeg soi only", b"\xff\xd8\xff"
    yield "gif header only", b"GIF89a"
    if with_huge:
        yield "21 MB of zeros", b"\0" * (21 * 1024 * 1024)
    rng = random.Random(3)
    for i in range(10 * scale):
        yield f"random bytes #{i}", rng.randbytes(rng.randint(1, 4096))
    for i in range(10 * scale):
        broken = bytearray(good_png)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(8, len(broken))  # keep the signature: a PNG that breaks later
            broken[pos] = rng.randrange(256)
        yield f"corrupted png #{i}", bytes(broken)


def odd_good_images() -> Iterator[tuple[str, bytes]]:
    """Unusual images that are accepted (converted): animated, CMYK, 16-bit, palette, 1-bit."""
    yield "animated gif", animated_gif([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    yield "cmyk jpeg", encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG")
    yield "16-bit png", encode(Image.new("I;16", (40, 30), 40000), "PNG")
    yield "palette png", encode(Image.new("P", (40, 30), 3), "PNG")
    yield "1-bit bmp", encode(Image.new("1", (40, 30), 1), "BMP")
    yield "rgba webp", encode(Image.new("RGBA", (40, 30), (1, 2, 3, 100)), "WEBP")
    yield "1x1 png", encode(Image.new("RGB", (1, 1)), "PNG")


# ---- template graphs -------------------------------------------------------------------------


def bundled_make() -> dict[str, Any]:
    """The bundled `make` template file as JSON: the base every mutation starts from."""
    for path in bundled_template_files():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if data.get("name") == "make":
            return data
    raise AssertionError("templates/make.json is missing")


def _mutated(base: dict[str, Any], change: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    change(data)
    return data


def bad_templates() -> Iterator[tuple[str, Any]]:
    """Template definitions `Template.parse` / `TemplateRepo.load` must refuse."""
    base = bundled_make()
    graph_ids = list(base["graph"])
    yield "list json", [1, 2, 3]
    yield "string json", "graph"
    yield "number json", 5
    yield "null json", None
    yield "empty object", {}
    yield "no graph", {k: v for k, v in base.items() if k != "graph"}
    yield "graph is list", {**base, "graph": [base["graph"]]}
    yield "graph is string", {**base, "graph": "{}"}
    yield "empty graph", {**base, "graph": {}, "inputs": {}}
    yield "bad name", {**base, "name": "../../etc/passwd"}
    yield "empty name", {**base, "name": ""}
    yield "unknown kind", {**base, "kind": "video"}
    yield "negative price", {**base, "price_base": -5}
    yield "price is text", {**base, "price_base": "ten"}
    for nid in graph_ids[:3]:
        yield (
            f"node {nid} without class_type",
            _mutated(base, lambda d, n=nid: d["graph"][n].pop("class_type")),
        )
        yield (
            f"node {nid} class_type int",
            _mutated(base, lambda d, n=nid: d["graph"][n].update(class_type=7)),
        )
        yield (
            f"node {nid} without inputs",
            _mutated(base, lambda d, n=nid: d["graph"][n].pop("inputs")),
        )
        yield (
            f"node {nid} inputs list",
            _mutated(base, lambda d, n=nid: d["graph"][n].update(inputs=[1, 2])),
        )
        yield (
            f"node {nid} is a string",
            _mutated(base, lambda d, n=nid: d["graph"].update({n: "node"})),
        )
    yield (
        "dangling link",
        _mutated(base, lambda d: d["graph"]["3"]["inputs"].update(model=["99", 0])),
    )
    yield "link to int id", _mutated(base, lambda d: d["graph"]["3"]["inputs"].update(model=[4, 0]))
    yield (
        "negative output index",
        _mutated(base, lambda d: d["graph"]["3"]["inputs"].update(model=["4", -1])),
    )
    yield (
        "no outputs",
        _mutated(
            base,
            lambda d: [
                n.update(class_type="PreviewLatent")
                for n in d["graph"].values()
                if n.get("class_type") in ("SaveImage", "PreviewImage")
            ],
        ),
    )
    yield (
        "input map to missing node",
        _mutated(base, lambda d: d["inputs"].update(prompt=["77", "text"])),
    )
    yield (
        "input map to missing input",
        _mutated(base, lambda d: d["inputs"].update(prompt=["6", "nope"])),
    )
    yield "input map to a link", _mutated(base, lambda d: d["inputs"].update(prompt=["6", "clip"]))
    yield "input map triple", _mutated(base, lambda d: d["inputs"].update(prompt=["6", "text", 1]))
    yield "input map string", _mutated(base, lambda d: d["inputs"].update(prompt="6.text"))
    yield "input map is list", {**base, "inputs": [["6", "text"]]}
    yield (
        "ambiguous input_ title",
        _mutated(base, lambda d: d["graph"]["5"].update(_meta={"title": "input_size"})),
    )
    yield (
        "input_ title twice",
        _mutated(
            base,
            lambda d: (
                d["inputs"].pop("prompt"),
                d["inputs"].pop("negative"),
                d["graph"]["7"].update(_meta={"title": "input_prompt"}),
            ),
        ),
    )
    yield (
        "deeply nested list input",
        _mutated(base, lambda d: d["graph"]["3"]["inputs"].update(extra=_nested(3000))),
    )
    yield (
        "deeply nested object input",
        _mutated(base, lambda d: d["graph"]["3"]["inputs"].update(extra=_nested(3000, dicts=True))),
    )
    yield (
        "nested past BSON's limit",
        _mutated(base, lambda d: d["graph"]["3"]["inputs"].update(extra=_nested(150, dicts=True))),
    )


def _nested(depth: int, *, dicts: bool = False) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": value} if dicts else [value]
    return value


def bad_template_files() -> Iterator[tuple[str, bytes]]:
    """Template *files* (bytes) `read_template_file` must refuse."""
    yield "empty file", b""
    yield "not json", b"{graph: nope"
    yield "not utf-8", b"\xff\xfe{\x00}\x00"
    yield "truncated", json.dumps(bundled_make()).encode()[:200]
    yield "deeply nested json", b"[" * 100_000 + b"]" * 100_000
    yield "json list", b"[1, 2]"


# ---- collections -----------------------------------------------------------------------------


def bad_trait_lines() -> Iterator[tuple[str, str]]:
    yield "empty", ""
    yield "blank lines", "\n\n   \n"
    yield "only comments", "# a\n# b"
    yield "too many fields", "red|a red hat|0.5|extra"
    yield "missing name", "|a red hat|0.5"
    yield "rarity text", "red|red hat|often"
    yield "rarity negative", "red|red hat|-1"
    yield "rarity nan", "red|red hat|nan"
    yield "rarity inf", "red|red hat|inf"
    yield "rarity huge", "red|red hat|1e400"
    yield "duplicate", "red\nRED"
    yield "pipes only", "|||"
    yield "one good one bad", "red|red hat|0.5\nblue||x"


def bad_master_prompts() -> Iterator[tuple[str, str]]:
    yield "unclosed [", "a [[Hat]] [with a"
    yield "unopened ]", "a cat] [[Hat]]"
    yield "deep unclosed", "[" * 500
    yield "deep unopened", "]" * 500
    yield "empty slot", "a [[ ]] cat"
    yield "unknown trait", "a [[Nope]] cat"
    yield "unknown in exclusion", "[a [[Hat]]]{Hat, Nope}"
    yield "exclusion of one", "[a [[Hat]]]{Hat}"
    yield "nested unclosed", "[[[Hat]] [ [ ] "


# ---- hypothesis strategies -------------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
setting_keys = st.sampled_from([*SETTING_NAMES, *UNKNOWN_KEYS])
setting_values = (
    json_leaf
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([math.nan, math.inf, -math.inf, "nan", "inf", "1e999", " 512 ", "0x10"])
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
)
