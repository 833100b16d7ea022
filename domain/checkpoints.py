"""Which checkpoint a job may name, and which family — hence which price — it belongs to.

The inventory StationThis knows is the default checkpoint of every template with a `checkpoint`
input (it belongs to that template's family), plus the files an operator lists in
`Config.checkpoints` (file name -> family). ComfyUI's /object_info names files but not their
family, so a server's own list cannot say which template a checkpoint fits or what it costs;
that is why it is not the source, and why an error never lists it.

A template of family `sdxl` (or `flux`, `sd15`) takes only checkpoints of its family; a template
of family `any` takes every known one. The price base is the template's own when the checkpoint
is of the template's family (the template's base is that family's price), else the checkpoint
family's base (docs/domain.md "Prices"), so a Flux checkpoint always costs a Flux price.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from domain.errors import UserInputError
from domain.pricing import FAMILY_BASE, family_base
from domain.rules import DEFAULT_RULES, PriceRules
from domain.templates import Template

ANY_FAMILY = "any"


def check_families(configured: Mapping[str, str]) -> dict[str, str]:
    """The configured inventory, refused at start-up when a family is not one with a price."""
    bad = {name: fam for name, fam in configured.items() if fam not in FAMILY_BASE}
    if bad:
        raise ValueError(
            f"checkpoints: unknown family for {', '.join(sorted(bad))} "
            f"(one of {', '.join(sorted(FAMILY_BASE))})"
        )
    return dict(configured)


def default_checkpoint(template: Template) -> str | None:
    """The checkpoint file a template's graph names, if it has a `checkpoint` input."""
    ref = template.inputs.get("checkpoint")
    if ref is None:
        return None
    value = template.graph.get(ref.node, {}).get("inputs", {}).get(ref.input)
    return value if isinstance(value, str) and value else None


def checkpoint_inventory(
    templates: Iterable[Template], configured: Mapping[str, str] | None = None
) -> dict[str, str]:
    """File name -> family of every checkpoint StationThis knows (configured ones win)."""
    found: dict[str, str] = {}
    for t in templates:
        name = default_checkpoint(t)
        if name and t.family in FAMILY_BASE:
            found.setdefault(name, t.family)
    found.update(configured or {})
    return found


def choices_for(family: str, inventory: Mapping[str, str]) -> list[str]:
    """The checkpoints a template of `family` may use, sorted."""
    return sorted(n for n, f in inventory.items() if family in (ANY_FAMILY, f))


def check_checkpoint(name: str, template: Template, inventory: Mapping[str, str]) -> str:
    """The family of checkpoint `name` under `template`, or a refusal naming the choices of
    the template's family only (never the whole server's list)."""
    family = inventory.get(name)
    if family is not None and (template.family in (ANY_FAMILY, family)):
        return family
    allowed = choices_for(template.family, inventory)
    kind = "any" if template.family == ANY_FAMILY else template.family
    raise UserInputError(
        f"checkpoint {name!r} cannot be used with template {template.name!r} ({kind} "
        f"checkpoints: {', '.join(allowed) or 'none known'}); set another one, or an empty "
        "checkpoint for the template's default"
    )


def image_base(
    template: Template, family: str | None, rules: PriceRules = DEFAULT_RULES.prices
) -> int:
    """Price base of one image: the template's for its own family's checkpoints, else the base
    of the checkpoint's family (`family` None: the template's default checkpoint)."""
    if family is None or family == template.family:
        return template.base_price
    return family_base(family, rules)
