"""Caption metrics: the vocabulary parser recovers ground truth; accuracy and CIDEr rank captions."""
from __future__ import annotations

from captioner.captioner_eval import attribute_accuracy, caption_scores, parse_caption
from pipelines.cli_caption import synth_vocabulary
from pipelines.synth.world import sample_world, world_truth


def _shots(n_videos: int = 12) -> list[dict]:
    truth = world_truth(0, sample_world(0, n_videos, 10.0, 160))
    return [s for v in truth["videos"] for s in v["shots"] if not s["defects"]]


def test_parser_recovers_every_ground_truth_attribute():
    vocab = synth_vocabulary()
    shots = _shots()
    assert len(shots) > 20
    for shot in shots:
        assert parse_caption(shot["caption"], vocab) == shot["attributes"], shot["caption"]


def test_attribute_accuracy_ranks_truth_over_alt_text_and_ignores_object_order():
    vocab = synth_vocabulary()
    shots = _shots()
    truths = [s["attributes"] for s in shots]
    perfect = attribute_accuracy([s["caption"] for s in shots], truths, vocab)
    assert perfect["overall"] == 1.0 and perfect["exact"] == 1.0
    alt = attribute_accuracy([s["alt_text"] for s in shots], truths, vocab)
    assert alt["overall"] < 0.5 and alt["motion"] == 0.0
    two = next(s for s in shots if len(s["attributes"]["objects"]) == 2)
    first, second = two["caption"].split(" over a ")[0].split(" and a ")
    swapped = f"A {second} and {first[0].lower()}{first[1:]} over a {two['caption'].split(' over a ')[1]}"
    assert attribute_accuracy([swapped], [two["attributes"]], vocab)["overall"] == 1.0
    wrong_bg = two["caption"].replace(f"{two['attributes']['background']} background", "nobg background")
    assert attribute_accuracy([wrong_bg], [two["attributes"]], vocab)["background"] == 0.0


def test_caption_scores_prefer_the_matching_caption():
    refs = {"a": ["A large red circle moves left over a blue background; the camera is static."],
            "b": ["A small green star spins in place over a gray background; the camera pans left."]}
    same = caption_scores({k: v[0] for k, v in refs.items()}, refs)
    assert same["bleu4"] > 0.99
    alt = caption_scores({"a": "red ball", "b": "star video"}, refs)
    assert alt["cider"] < same["cider"] and alt["bleu4"] < 0.1
