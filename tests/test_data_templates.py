"""Conversation templates: exact prompt text, image placement, role handling."""

import pytest

from lmm.data.templates import (
    LLAMA_2_SYSTEM,
    VICUNA_SYSTEM,
    Turn,
    build_prompt,
    get_template,
    normalize_turns,
    place_image,
    render,
)

CONV = [
    {"from": "human", "value": "What colour is it?\n<image>"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "And its shape?"},
]


def test_vicuna_prompt_text():
    assert build_prompt("vicuna_v1", CONV) == (
        f"{VICUNA_SYSTEM} USER: <image>\nWhat colour is it? ASSISTANT: red</s>USER: And its shape? ASSISTANT:"
    )


def test_llama_2_prompt_text():
    assert build_prompt("llama_2", CONV) == (
        f"[INST] <<SYS>>\n{LLAMA_2_SYSTEM}\n<</SYS>>\n\n<image>\nWhat colour is it? [/INST] red </s>"
        "<s>[INST] And its shape? [/INST]"
    )


def test_plain_keeps_only_image_and_caption():
    conv = [{"from": "human", "value": "Describe this.\n<image>"}, {"from": "gpt", "value": "A red circle."}]
    assert build_prompt("plain", conv, add_generation_prompt=False) == "<image>A red circle.</s>"
    assert build_prompt("plain", conv[:1]) == "<image>"


def test_training_segments_mark_only_replies_trained():
    conv = [*CONV, {"from": "gpt", "value": "circle"}]
    trained = [s.text for s in render("vicuna_v1", conv) if s.trained]
    assert trained == [" red", "</s>", " circle", "</s>"]
    trained = [s.text for s in render("llama_2", conv) if s.trained]
    assert trained == [" red ", "</s>", " circle ", "</s>"]


def test_image_moves_to_front_of_first_user_turn_once():
    turns = [Turn("user", "Look <image> here <image>"), Turn("assistant", "ok")]
    assert place_image(turns, has_image=True)[0].text == "<image>\nLook  here"
    assert place_image(turns, has_image=False)[0].text == "Look  here"


def test_image_added_when_record_has_image_but_text_lacks_it():
    conv = [{"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "a cat"}]
    assert render("vicuna_v1", conv, has_image=True)[1].text == "<image>"


def test_roles_normalised_and_leading_assistant_turn_dropped():
    turns = normalize_turns(
        [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "q"}, {"from": "chatgpt", "value": "a"}]
    )
    assert turns == [Turn("user", "q"), Turn("assistant", "a")]
    with pytest.raises(ValueError, match="unknown conversation role"):
        normalize_turns([{"from": "robot", "value": "x"}])


def test_turns_must_alternate():
    with pytest.raises(ValueError, match="alternate"):
        build_prompt("vicuna_v1", [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}])


def test_generation_prompt_must_end_on_user_turn():
    with pytest.raises(ValueError, match="end on a user turn"):
        build_prompt("vicuna_v1", [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}])


def test_registry_names_and_aliases():
    assert get_template("v1") is get_template("vicuna_v1")
    assert get_template("llava_llama_2").name == "llama_2"
    with pytest.raises(KeyError, match="plain"):
        get_template("chatml")
