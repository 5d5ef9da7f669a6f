"""Label resolution against the real ImageNet-1k class index shipped in include/models."""

from __future__ import annotations

import pytest

from harvest.model.labels import load_classes, normalize, resolve_labels
from harvest.settings.config import DEFAULT_MODELS_DIR, ConfigError

GOLDFISH = "n01443537"
GREAT_WHITE_SHARK = "n01484850"
CRANE_BIRD = "n02012849"
CRANE_MACHINE = "n03126707"


def resolve(*labels: str):
    return resolve_labels(list(labels), DEFAULT_MODELS_DIR)


def problems_of(*labels: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        resolve(*labels)
    return info.value.problems


def test_class_index_has_the_thousand_imagenet_classes():
    classes = load_classes(DEFAULT_MODELS_DIR)
    assert len(classes) == 1000
    assert [c.index for c in classes] == list(range(1000))
    assert len({c.wnid for c in classes}) == 1000
    assert classes[1].wnid == GOLDFISH


def test_class_name_resolves_to_its_wordnet_id():
    [target] = resolve("goldfish")
    assert target.label == "goldfish"
    assert target.wnids == frozenset({GOLDFISH})
    assert target.folder == "goldfish"


@pytest.mark.parametrize(
    "label", ["great white shark", "Great_White shark", "GREAT-WHITE  SHARK", "  great white shark "]
)
def test_case_spaces_underscores_and_dashes_do_not_matter(label):
    [target] = resolve(label)
    assert target.wnids == frozenset({GREAT_WHITE_SHARK})
    assert target.folder == "great_white_shark"


@pytest.mark.parametrize("label", ["white shark", "man-eater", "Carcharodon carcharias"])
def test_synonyms_resolve_to_their_class(label):
    [target] = resolve(label)
    assert target.wnids == frozenset({GREAT_WHITE_SHARK})


def test_wordnet_id_resolves_exactly():
    [target] = resolve(GOLDFISH)
    assert target.wnids == frozenset({GOLDFISH})
    assert target.folder == "goldfish"


def test_wordnet_id_that_is_not_an_imagenet_class_is_refused():
    [problem] = problems_of("n99999999")
    assert "n99999999" in problem
    assert "WordNet id" in problem


def test_unknown_label_suggests_near_misses():
    [problem] = problems_of("goldfsh")
    assert "'goldfsh' is not an ImageNet-1k class name" in problem
    assert "did you mean" in problem
    assert "'goldfish'" in problem


def test_unknown_label_without_near_miss_has_no_hint():
    [problem] = problems_of("qwxzvbnm")
    assert "qwxzvbnm" in problem
    assert "did you mean" not in problem


def test_ambiguous_name_is_refused_listing_every_wordnet_id():
    [problem] = problems_of("crane")
    assert "ambiguous" in problem
    assert CRANE_BIRD in problem
    assert CRANE_MACHINE in problem


def test_each_crane_can_be_chosen_by_its_wordnet_id():
    [bird] = resolve(CRANE_BIRD)
    [machine] = resolve(CRANE_MACHINE)
    assert bird.wnids == frozenset({CRANE_BIRD})
    assert machine.wnids == frozenset({CRANE_MACHINE})


def test_classes_sharing_a_name_get_distinct_folders():
    bird, machine = resolve(CRANE_BIRD, CRANE_MACHINE)
    assert bird.folder != machine.folder


def test_all_problems_are_reported_together():
    problems = problems_of("goldfish", "goldfsh", "crane", "n99999999")
    assert len(problems) == 3
    assert "goldfsh" in problems[0]
    assert "crane" in problems[1]
    assert "n99999999" in problems[2]


def test_duplicates_are_collapsed_keeping_the_first_spelling():
    targets = resolve("great white shark", "goldfish", "Great_White shark", GOLDFISH, "white shark")
    assert [t.wnids for t in targets] == [frozenset({GREAT_WHITE_SHARK}), frozenset({GOLDFISH})]
    assert [t.label for t in targets] == ["great white shark", "goldfish"]


def test_order_of_labels_is_kept():
    targets = resolve("tench", "goldfish", "great white shark")
    assert [t.folder for t in targets] == ["tench", "goldfish", "great_white_shark"]


def test_no_labels_gives_no_targets():
    assert resolve() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Great_White shark", "great white shark"), ("  a--b__c  d ", "a b c d"), ("TENCH", "tench")],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


# --- groups: WordNet synsets above the ImageNet classes ---

CHIHUAHUA = "n02085620"
TABBY = "n02123045"
DOG = "n02084071"


def test_dog_is_every_dog_breed_and_no_cat():
    [dog] = resolve("dog")
    assert dog.group == DOG
    assert dog.folder == "dog"
    assert CHIHUAHUA in dog.wnids
    assert TABBY not in dog.wnids
    classes = {c.wnid: c.name for c in load_classes(DEFAULT_MODELS_DIR)}
    assert {"golden retriever", "pug", "Siberian husky"} <= {classes[w] for w in dog.wnids}
    assert len(dog.wnids) == 118  # every ILSVRC-2012 domestic dog breed


@pytest.mark.parametrize(
    ("label", "member", "outsider"),
    [
        ("bird", "n01530575", "n01440764"),  # brambling yes, tench no
        ("fish", "n01440764", "n01530575"),  # tench yes, brambling no
        ("vehicle", "n04285008", "n02085620"),  # sports car yes, Chihuahua no
    ],
)
def test_groups_contain_their_members_only(label, member, outsider):
    [target] = resolve(label)
    assert target.group is not None
    assert member in target.wnids
    assert outsider not in target.wnids


def test_group_by_wordnet_id():
    [dog] = resolve(DOG)
    assert dog.wnids == resolve("dog")[0].wnids


def test_ambiguous_group_name_lists_every_candidate():
    [problem] = problems_of("cat")
    assert "ambiguous" in problem
    assert "n02121620" in problem  # cat, true cat
    assert "n02127808" in problem  # big cat


def test_group_names_are_suggested_for_near_misses():
    [problem] = problems_of("vehicel")
    assert "'vehicle'" in problem


def test_a_class_name_wins_over_a_group_of_the_same_name():
    [tabby] = resolve("tabby")
    assert tabby.wnids == frozenset({TABBY})
    assert tabby.group is None


def test_hierarchy_file_matches_its_generator_source_format():
    import json

    data = json.loads((DEFAULT_MODELS_DIR / "imagenet_hierarchy.json").read_text())
    synsets = data["synsets"]
    classes = load_classes(DEFAULT_MODELS_DIR)
    assert all(c.wnid in synsets for c in classes)
    assert synsets[CHIHUAHUA]["parents"] == ["n02085374"]  # toy dog
    # every parent is itself in the file, so groups can be walked without WordNet installed
    assert all(p in synsets for entry in synsets.values() for p in entry["parents"])


def test_hierarchy_generator_reads_wordnet_data_lines(tmp_path):
    """The generator's parser on lines in WordNet 3.0's data.noun format (hypernym @ and instance @i)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_hierarchy", DEFAULT_MODELS_DIR / "build_hierarchy.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "data.noun"
    data.write_text(
        "  1 This software and database is being provided\n"
        "02085620 05 n 01 Chihuahua 0 001 @ 02085374 n 0000 | an old breed of tiny dog\n"
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 02083346 n 0000 "
        "~ 02085374 n 0000 | a member of the genus Canis\n"
        "09999999 18 n 01 Rex 0 001 @i 02084071 n 0000 | a dog by name\n"
    )
    parsed = module.parse_data_noun(data)
    assert parsed["n02085620"] == (["Chihuahua"], ["n02085374"])
    assert parsed["n02084071"] == (["dog", "domestic dog", "Canis familiaris"], ["n02083346"])
    assert parsed["n09999999"] == (["Rex"], ["n02084071"])
