"""The `tvdb` console script, run as a user would."""

import json

from tvdb_assets.cli import main
from tvdb_assets_tests.conftest import Project


def test_ingest_search_and_status(project: Project, tmp_path, capsys):
    source = tmp_path / "handbook"
    source.mkdir()
    (source / "bees.md").write_text(
        "# Beekeeping\n\n## Hives\n\nA hive holds one queen and many worker bees.\n"
    )
    (source / "ships.txt").write_text("Clipper ships carried tea across the ocean.\n")
    (source / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")

    code = main(["ingest", str(source)])
    out = capsys.readouterr()

    assert code == 1  # one document failed
    assert "3 files: 3 new" in out.out and "2 ingested" in out.out
    assert "failed: handbook/broken.pdf: corrupt PDF" in out.out
    assert "3/3 documents" in out.err  # the progress bar

    assert main(["search", "queen worker bees hive", "-k", "2"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 2
    assert hits[0]["document"] == "handbook/bees.md"
    assert hits[0]["heading_path"] == ["Beekeeping", "Hives"]
    assert hits[0]["score"] >= hits[1]["score"]

    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "documents" in status and "handbook/broken.pdf" in status

    assert main(["ingest", str(source)]) == 1  # the bad file is still failing
    out = capsys.readouterr().out
    assert "0 new, 0 changed, 3 unchanged" in out and "0 run(s)" in out
