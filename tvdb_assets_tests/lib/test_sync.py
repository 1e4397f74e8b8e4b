"""Run planning: every document to ingest ends up in one contiguous stretch of keys."""

import pytest

from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.sync import plan_partitions


def files(*keys: str) -> list[InboxFile]:
    return [InboxFile(k, f"{k}.md", 1, 1, "sha") for k in keys]


def test_new_documents_append_and_split_into_batches():
    plan = plan_partitions(["a", "b"], files("c", "d", "e"), batch_size=2)
    assert (plan.new_keys, plan.move_keys, plan.retire_keys) == (["c", "d", "e"], [], [])
    assert plan.batches == [["c", "d"], ["e"]]


def test_scattered_changes_move_to_the_end_with_new_ones():
    plan = plan_partitions(["a", "b", "c", "d"], files("a", "c", "z"), batch_size=200)
    assert plan.move_keys == ["a", "c"]
    assert plan.batches == [["a", "c", "z"]]


def test_changes_already_at_the_end_stay_put():
    plan = plan_partitions(["a", "b", "c"], files("b", "c"), 200)
    assert plan.move_keys == []
    assert plan.batches == [["b", "c"]]


def test_removed_documents_retire_and_never_run():
    plan = plan_partitions(["a", "b", "c"], files("a"), 200, removed=files("c"))
    assert plan.retire_keys == ["c"]
    assert plan.move_keys == ["a"]  # b is now last, so a moves behind it
    assert plan.batches == [["a"]]


def test_a_file_added_back_under_a_known_key_is_rerun_not_duplicated():
    plan = plan_partitions(["a", "b"], files("a"), 200)
    assert plan.new_keys == [] and plan.move_keys == ["a"]


def test_nothing_to_do_plans_nothing():
    assert plan_partitions(["a"], [], 200).batches == []
    with pytest.raises(ValueError):
        plan_partitions([], [], 0)
