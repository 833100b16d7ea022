"""`stationthis comfy check [URL]`: which loaded templates each GPU server can run, and why not.

Without URL it checks against every server a comfy worker recorded lately (store/inventory.py);
with URL it reads that server's `/object_info` now (a server no worker serves yet). Every
template is checked in each of its forms (its graph, then its variants) and with every
operator-chosen model (`choices`, and the config's UPSCALE_MODELS / TRAINING_CHECKPOINTS).
Exit 0 when every template can run somewhere, 1 when one cannot, 2 when no server is known.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.cli.points import open_stores
from domain.inventory import ServerInventory, TemplateCheck, check_template
from domain.templates import Template


def register(subparsers: Any) -> None:
    """Add `comfy check` to the CLI tree."""
    parser = subparsers.add_parser("comfy", help="what the ComfyUI servers can run")
    sub = parser.add_subparsers(dest="comfy_command", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check",
        help="check every loaded template (and variant) against each server; exit 1 if one "
        "cannot run anywhere",
    )
    check.add_argument("url", nargs="?", help="read this server's /object_info now")
    check.set_defaults(handler=run_check)


def config_overrides(config: Any) -> dict[str, dict[str, Mapping[str, Any]]]:
    """The config's model choices, by template and input (they win over the template's)."""
    return {
        "upscale": {"model": dict(config.upscale_models)},
        "train-lora": {"checkpoint": dict(config.training_checkpoints)},
    }


def run_check(args: argparse.Namespace) -> int:
    from workers.config import Config

    config = Config()
    stores = open_stores()  # a stack that is down: one line from main()
    try:
        templates = [stores.templates.get(n) for n in stores.templates.names()]
        servers = [asyncio.run(_read(args.url))] if args.url else stores.inventory.servers()
    finally:
        stores.close()
    text, code = render_check(templates, servers, config_overrides(config))
    print(text, file=sys.stderr if code == 2 else sys.stdout)
    return code


async def _read(url: str) -> ServerInventory:
    from comfy.client import ComfyClient

    async with ComfyClient(url, timeout=10.0) as comfy:
        return (await comfy.inventory()).model_copy(update={"url": url.rstrip("/")})


def render_check(
    templates: list[Template],
    servers: list[ServerInventory],
    overrides: Mapping[str, Mapping[str, Mapping[str, Any]]],
    now: datetime | None = None,
) -> tuple[str, int]:
    """The report and the exit code (0 all runnable, 1 one is not, 2 no server known)."""
    if not servers:
        return (
            "no GPU server known: no comfy worker reported within the hour "
            "(start one, or name a server: stationthis comfy check URL)",
            2,
        )
    now = now or datetime.now(UTC)
    lines = []
    for s in servers:
        folders = ", ".join(f"{f} {len(v)}" for f, v in sorted(s.models.items()) if v)
        age = ""
        if s.seen_at is not None:
            seen = s.seen_at if s.seen_at.tzinfo else s.seen_at.replace(tzinfo=UTC)
            age = f", seen {max(0, int((now - seen).total_seconds()))} s ago"
        version = f" (ComfyUI {s.version})" if s.version else ""
        models = folders or "no models"
        lines.append(f"server {s.url}{version}: {len(s.node_types)} node types; {models}{age}")
    lines.append("")
    checks: list[TemplateCheck] = [
        check_template(t, servers, overrides.get(t.name)) for t in templates
    ]
    width = max((len(c.template) for c in checks), default=8)
    for c in checks:
        if c.runnable:
            where = ", ".join(f"{f.server} ({f.variant or 'default'})" for f in _first_per(c))
            lines.append(f"{c.template:<{width}}  OK      runs on {where}")
        else:
            lines.append(f"{c.template:<{width}}  CANNOT  no server can run it")
        for f in c.forms:
            if f.missing and not any(a.server == f.server for a in c.able()):
                lines.append(
                    f"{'':<{width}}          {f.server} ({f.variant or 'default'}) lacks "
                    f"{f.missing.describe()}"
                )
    bad = [c.template for c in checks if not c.runnable]
    lines.append("")
    if bad:
        lines.append(
            f"verdict: {len(checks) - len(bad)} of {len(checks)} template(s) can run; "
            f"no server can run: {', '.join(bad)}"
        )
        return "\n".join(lines), 1
    lines.append(f"verdict: all {len(checks)} template(s) can run on at least one server")
    return "\n".join(lines), 0


def _first_per(check: TemplateCheck) -> list[Any]:
    """Per server, the first form it can run (the one a job there uses)."""
    seen: dict[str, Any] = {}
    for f in check.able():
        seen.setdefault(f.server, f)
    return list(seen.values())
