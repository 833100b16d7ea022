"""The `checkpoint` setting: known checkpoints only, of the template's family, priced by the
checkpoint's family; a refusal names that family's choices, never the server's whole list."""

from __future__ import annotations

import pytest

from domain.checkpoints import (
    check_checkpoint,
    check_families,
    checkpoint_inventory,
    choices_for,
    image_base,
)
from domain.errors import UserInputError
from domain.templates import Template
from store.templates import read_template_file
from templates import bundled_template_files

SDXL = "sdxl-base-1.0.safetensors"
FLUX = "flux1-dev.safetensors"


@pytest.fixture(scope="module")
def bundled() -> dict[str, Template]:
    return {t.name: t for t in map(read_template_file, bundled_template_files())}


def any_family(bundled: dict[str, Template]) -> Template:
    """The make template as an operator might load it for every family."""
    data = bundled["make"].definition()
    return Template.parse({**data, "name": "make-any", "family": "any", "price_base": None})


def test_the_inventory_is_the_templates_defaults_plus_the_configured_files(bundled) -> None:
    inv = checkpoint_inventory(bundled.values(), {"juggernaut-xl.safetensors": "sdxl"})
    assert inv == {SDXL: "sdxl", FLUX: "flux", "juggernaut-xl.safetensors": "sdxl"}
    assert choices_for("sdxl", inv) == ["juggernaut-xl.safetensors", SDXL]
    assert choices_for("any", inv) == sorted(inv)


def test_a_configured_checkpoint_of_an_unknown_family_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match=r"unknown family for x\.safetensors"):
        check_families({"x.safetensors": "sdxxl"})


def test_a_flux_checkpoint_under_an_sdxl_template_is_refused_naming_sdxl_choices_only(
    bundled,
) -> None:
    inv = checkpoint_inventory(bundled.values(), {"secret-in-house.safetensors": "flux"})
    with pytest.raises(UserInputError) as err:
        check_checkpoint(FLUX, bundled["make"], inv)
    assert SDXL in err.value.message
    assert "secret-in-house" not in err.value.message, "other families' files are not listed"
    with pytest.raises(UserInputError, match="sdxl checkpoints: sdxl-base") as unknown:
        check_checkpoint("../../etc/passwd", bundled["make"], inv)
    assert FLUX not in unknown.value.message
    assert check_checkpoint(SDXL, bundled["make"], inv) == "sdxl"
    assert check_checkpoint(FLUX, bundled["make-flux"], inv) == "flux"


def test_the_price_base_follows_the_checkpoints_family(bundled) -> None:
    inv = checkpoint_inventory(bundled.values())
    anyt = any_family(bundled)
    assert image_base(anyt, check_checkpoint(FLUX, anyt, inv)) == 20
    assert image_base(anyt, check_checkpoint(SDXL, anyt, inv)) == 10
    assert image_base(bundled["make"], None) == bundled["make"].base_price
    assert image_base(bundled["make-flux"], "flux") == bundled["make-flux"].base_price
