"""Collections: the cook's quote and the export, shared by the client and the activities.

`quote_piece` prices one piece with the make planner (prepare's own checks, so bad settings
are refused before a cook starts); `export_zip` builds the export of the approved pieces.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from domain.collections import (
    Collection,
    attributes,
    choose_traits,
    parse_master_prompt,
    piece_seed,
    render_prompt,
    trait_frequencies,
)
from domain.jobs import MakeImageRequest, PrepareInput
from domain.safety import PromptBlocked
from services.job_plans import MakePlanner
from store.blobs import BlobStore
from store.collections import Piece


def piece_request(col: Collection, user: str, prompt: str, seed: int) -> MakeImageRequest:
    return MakeImageRequest(
        user=user,
        platform="collection",
        prompt=prompt,
        template=col.config.template,
        overrides={**col.config.overrides, "seed": seed, "batch": 1},
    )


def quote_piece(planner: MakePlanner, col: Collection, user: str) -> int:
    """The price of one piece for `user` (prepare's own checks: bad settings raise here).

    The operator's block list is checked here over the master prompt and every trait value,
    so a cook that would render a blocked term is refused before it starts (each piece's
    prepare checks its own prompt again)."""
    texts = [col.config.master_prompt]
    texts += [v.prompt or v.name for t in col.config.traits for v in t.values]
    if planner.stores.safety.is_blocked(*texts):
        raise PromptBlocked("collection's master prompt or one of its trait values")
    master = parse_master_prompt(col.config.master_prompt)
    choice = choose_traits(col.config, piece_seed(col.id, 1), master)
    req = piece_request(col, user, render_prompt(col.config, choice, master) or "x", 1)
    return planner.plan_make_image(PrepareInput(workflow_id="", request=req)).price


def export_zip(
    blobs: BlobStore, col: Collection, pieces: list[Piece]
) -> tuple[bytes, dict[str, Any]]:
    """The export: `metadata/<n>.json` and `images/<n>.png` per approved piece, plus
    `summary.json` (trait frequencies). Returns the zip bytes and the summary."""
    approved = [p for p in pieces if p.state == "approved" and p.blob_id]
    freq = trait_frequencies(p.traits for p in approved)
    summary = {
        "collection": col.name,
        "collection_id": col.id,
        "config_hash": col.config_hash,
        "pieces": len(approved),
        "trait_frequencies": freq,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in approved:
            assert p.blob_id is not None
            image = f"images/{p.number}.png"
            zf.writestr(image, blobs.get(p.blob_id))
            meta = {
                "name": f"{col.name} #{p.number}",
                "description": col.description,
                "image": image,
                "attributes": attributes(p.traits),
                "seed": p.seed,
                "config_hash": p.config_hash,
            }
            zf.writestr(f"metadata/{p.number}.json", json.dumps(meta, indent=2))
        zf.writestr("summary.json", json.dumps(summary, indent=2))
    return buf.getvalue(), summary
