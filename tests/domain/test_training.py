"""LoRA training rules: parameters, quotes, trigger words, captions, and how a prompt asks for a
trained model."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import SettingsError, UserInputError
from domain.training import (
    LoraModel,
    TrainingParams,
    add_lora_loaders,
    caption_with_trigger,
    check_caption,
    check_image_count,
    check_params,
    check_trigger_clash,
    check_trigger_word,
    chunks,
    common_words,
    loras_for_prompt,
    parse_lora_tags,
    quote,
    steps_in_name,
    trigger_is_safe,
)


def model(name: str, trigger: str, owner: str = "u1", **kw: object) -> LoraModel:
    return LoraModel(
        name=name,
        owner=owner,
        trigger_word=trigger,
        blob_id=f"blob-{name}",
        filename=f"st/{name}.safetensors",
        sha256="ab" * 32,
        **kw,  # type: ignore[arg-type]
    )


def test_the_quote_follows_the_domain_formula() -> None:
    assert quote(4, 1500) == 1000 + 50 * 4 + 20 * 15
    assert quote(20, 199) == 1000 + 50 * 20 + 20 * 1


def test_parameters_out_of_range_are_all_named_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        check_params(TrainingParams(steps=50, learning_rate=2.0, rank=0))
    fields = {e.field for e in err.value.errors}
    assert fields == {"steps", "learning_rate", "rank"}
    assert check_params(TrainingParams()).steps == 1500


@pytest.mark.parametrize("count", [0, 3, 21])
def test_too_few_or_too_many_images_is_refused(count: int) -> None:
    with pytest.raises(UserInputError):
        check_image_count(count)
    check_image_count(4)
    check_image_count(20)


def test_a_caption_over_1000_characters_is_refused() -> None:
    with pytest.raises(UserInputError, match="1001 characters"):
        check_caption("x" * 1001)
    assert check_caption("  a  fox \n") == "a fox"


@pytest.mark.parametrize("word", ["a", "two words", "9lives", "x" * 33, "zx;q"])
def test_a_trigger_word_must_be_one_safe_word(word: str) -> None:
    with pytest.raises(UserInputError):
        check_trigger_word(word)


@pytest.mark.parametrize("word", ["of", "in", "cat", "the", "zxq"])
def test_a_trigger_word_under_four_characters_is_refused(word: str) -> None:
    with pytest.raises(UserInputError, match="too short: at least 4 characters"):
        check_trigger_word(word)


@pytest.mark.parametrize("word", ["castle", "Dragon", "with", "houses", "running"])
def test_a_dictionary_word_is_refused_with_a_made_up_suggestion(word: str) -> None:
    with pytest.raises(UserInputError, match="ordinary English word") as err:
        check_trigger_word(word)
    suggestion = err.value.message.split("such as ")[1].split(" ")[0].strip("'")
    assert suggestion.lower().startswith(word.lower()) and suggestion != word
    assert check_trigger_word(suggestion) == suggestion, "the suggestion itself is accepted"
    assert not trigger_is_safe(word)


@pytest.mark.parametrize("word", ["zxq_me", "zkwq", "castle_x7k", "Fox-9000"])
def test_a_made_up_word_of_four_or_more_characters_is_a_trigger_word(word: str) -> None:
    assert check_trigger_word(word) == word
    assert trigger_is_safe(word)


def test_the_word_list_ships_with_the_domain_package() -> None:
    words = common_words()
    assert 3000 < len(words) < 50_000
    assert {"castle", "with", "there"} <= words and "zxq_me" not in words


def test_the_trigger_word_is_added_only_where_missing() -> None:
    assert caption_with_trigger("a fox in snow", "zxq") == "zxq, a fox in snow"
    assert caption_with_trigger("photo of ZXQ smiling", "zxq") == "photo of ZXQ smiling"
    assert caption_with_trigger("zxqfoo", "zxq") == "zxq, zxqfoo"  # whole words only


def test_a_trigger_word_clashing_with_one_of_the_users_models_is_refused() -> None:
    with pytest.raises(UserInputError, match="already used by your model 'me'"):
        check_trigger_clash("ZXQ", [model("me", "zxq")])
    check_trigger_clash("other", [model("me", "zxq")])


def test_training_is_split_into_chunks_that_cover_every_step() -> None:
    assert chunks(1500, 250) == [(s, 250) for s in range(0, 1500, 250)]
    assert chunks(300, 250) == [(0, 250), (250, 50)]


def test_lora_tags_are_parsed_and_removed_from_the_prompt() -> None:
    clean, uses = parse_lora_tags("a cat <lora:me:0.6> on a <LORA:other> hill")
    assert clean == "a cat on a hill"
    assert [(u.name, u.weight) for u in uses] == [("me", 0.6), ("other", None)]
    with pytest.raises(UserInputError, match="must be a number"):
        parse_lora_tags("<lora:me:strong>")


def test_a_prompt_uses_a_model_by_trigger_word_or_by_tag_with_its_weight() -> None:
    mine = model("me", "zxqq")
    public = model("style", "inkish", owner="u2", public=True)
    clean, loras = loras_for_prompt("zxqq in the style <lora:style:1.2>", [mine], [public])
    assert clean == "zxqq in the style"
    assert {(lora.name, lora.weight) for lora in loras} == {("me", 0.8), ("style", 1.2)}
    _, none = loras_for_prompt("zxqqfoo is not a trigger", [mine])
    assert none == []
    with pytest.raises(UserInputError, match="no model named 'ghost'"):
        loras_for_prompt("a <lora:ghost:1>", [mine])


def test_another_users_public_model_applies_only_when_named_or_added() -> None:
    public = model("kitty", "zqcat", owner="a", public=True)
    # In the prompt by its trigger word only: not applied (a public model is opt-in).
    _, none = loras_for_prompt("a zqcat on a sofa", [], [public])
    assert none == []
    # Named by tag, or in the user's own list (then its trigger word counts): applied.
    _, named = loras_for_prompt("a cat on a sofa <lora:kitty>", [], [public])
    _, added = loras_for_prompt("a zqcat on a sofa", [public], [])
    assert [lo.name for lo in named] == [lo.name for lo in added] == ["kitty"]


def test_a_model_whose_trigger_word_no_longer_passes_applies_only_by_name() -> None:
    old = model("moggy", "cat")
    _, none = loras_for_prompt("a cat on a sofa", [old])
    _, named = loras_for_prompt("a cat on a sofa <lora:moggy>", [old])
    assert none == [] and [lo.name for lo in named] == ["moggy"]


def test_two_public_models_of_the_same_name_must_be_added_to_be_named() -> None:
    one = model("style", "zqone", owner="a", public=True)
    two = model("style", "zqtwo", owner="b", public=True).model_copy(update={"blob_id": "b2"})
    with pytest.raises(UserInputError, match="2 public models are named 'style'"):
        loras_for_prompt("a fox <lora:style>", [], [one, two])
    _, picked = loras_for_prompt("a fox <lora:style>", [two], [one, two])
    assert [lo.blob_id for lo in picked] == ["b2"]


def test_a_prompt_may_use_at_most_the_configured_number_of_loras() -> None:
    models = [model(f"m{i}", f"zqtrig{i}") for i in range(4)]
    tags = " ".join(f"<lora:m{i}>" for i in range(4))
    with pytest.raises(UserInputError, match="uses 4 LoRAs; the limit is 3"):
        loras_for_prompt(f"a fox {tags}", models, max_loras=3)
    with pytest.raises(UserInputError, match="uses 4 LoRAs; the limit is 3"):
        loras_for_prompt("zqtrig0 zqtrig1 zqtrig2 zqtrig3", models, max_loras=3)
    _, three = loras_for_prompt("zqtrig0 zqtrig1 <lora:m2> zqtrig2", models, max_loras=3)
    assert len(three) == 3


def test_a_lora_loader_is_chained_after_the_checkpoint_for_model_and_clip() -> None:
    graph: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"vae": ["4", 2]}},
    }
    _, loras = loras_for_prompt("zxqq", [model("me", "zxqq")])
    out = add_lora_loaders(graph, loras)
    [new] = [k for k, v in out.items() if v["class_type"] == "LoraLoader"]
    assert out[new]["inputs"]["model"] == ["4", 0] and out[new]["inputs"]["clip"] == ["4", 1]
    assert out[new]["inputs"]["lora_name"] == "st/me.safetensors"
    assert out[new]["inputs"]["strength_model"] == 0.8
    assert out["3"]["inputs"]["model"] == [new, 0]
    assert out["6"]["inputs"]["clip"] == [new, 1]
    assert out["8"]["inputs"]["vae"] == ["4", 2]
    assert graph["3"]["inputs"]["model"] == ["4", 0], "the template graph is not changed"


def test_the_step_count_is_read_from_a_saved_loras_name() -> None:
    assert steps_in_name("st/st_abc_c1_500_steps_00001_.safetensors") == 500
    assert steps_in_name("plain.safetensors") == 0
