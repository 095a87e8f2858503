"""``augflow-dsl draw``: the picture holds every unit, group, q-network, drop and the right totals,
its texts stay inside their boxes without overlapping, the formats and the refusals, and the
pictures in docs/ say what a fresh drawing says."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("matplotlib")

from conftest import ROOT, run_cli  # noqa: E402

from augflow_dsl.cli import main  # noqa: E402
from augflow_dsl.graph.check import units  # noqa: E402
from augflow_dsl.tools.draw import draw_spec, layout_problems  # noqa: E402

DOCS = {"denseflow-74-10": "docs/arch-denseflow-74-10.svg", "vflow6ch": "docs/arch-vflow6ch.svg",
        "flowpp": "docs/arch-flowpp.svg"}


def svg_texts(path) -> list[str]:
    """Every <text> element's content, in document order (one per line of text)."""
    return [el.text or "" for el in ET.parse(path).iter("{http://www.w3.org/2000/svg}text")]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The three documented specs drawn once to SVG: name -> (DrawResult, texts)."""
    out = {}
    for name in DOCS:
        path = tmp_path_factory.mktemp("draw") / f"{name}.svg"
        r = draw_spec(ROOT / "specs" / f"{name}.flow", path)
        out[name] = (r, svg_texts(path))
    return out


def _dims(text: str) -> int:
    return int(re.search(r"([\d,]+) dims", text).group(1).replace(",", ""))


def test_denseflow_every_unit_and_the_totals(drawn):
    r, texts = drawn["denseflow-74-10"]
    report = r.report
    # every unit of every block is a cell; blocks of one unit are their own box
    blocks = [b for b in r.picture.boxes if b.kind == "grid"]
    assert [b.title for b in blocks] == ["stage 2: block of 6 units", "stage 4: block of 4 units",
                                         "stage 6: block of 1 unit"]
    assert [len(b.cells) for b in blocks] == [6, 4, 0]
    block_units = [u for u in units(report) if u.unit.startswith("block ") and not u.unit.startswith("block 3")]
    assert texts.count("unit 1") == 2 and texts.count("unit 6") == 1 and len(block_units) == 10
    for cell, u in zip([c for b in blocks for c in b.cells], block_units):
        assert "\u00d7".join(map(str, u.shape_out)) in cell.lines[0]
    # augment points: each cell's added dims sum to its block's badge; the badges sum to the augmented dims
    for b in blocks[:2]:
        assert sum(_dims(c.badge) for c in b.cells if c.badge) == _dims(b.badge)
    assert sum(_dims(b.badge) for b in blocks if b.badge) == report.dims.augmented == 14_720
    # squeeze-and-drop: the dims handed to priors, each drawn beside its drop
    drops = [b for b in r.picture.boxes if b.kind == "drop"]
    assert [_dims(b.badge) for b in drops] == [7_936, 4_928]
    assert [b.sides[0].title.startswith("prior: ") for b in drops] == [True, True]
    assert "\u22127,936 dims to a prior" in texts and "scores 7,936 dropped dims" in texts
    final = r.picture.boxes[-1]
    assert final.kind == "prior" and sum(_dims(b.badge) for b in drops) + _dims(final.lines[0]) == 17_792
    # the dequantizer's q-network beside the dequantizer, and the totals
    deq = next(b for b in r.picture.boxes if b.kind == "dequantizer")
    assert [s.title for s in deq.sides] == ["q dequant  (dequantizer group)"]
    assert "11 steps \u00b7 2,395,784 params \u00b7 636.90 M MACs" in texts
    assert "parameters 130,647,294 = flow 128,251,510 + q 0 + dequantizer 2,395,784" in texts
    assert "dims: data 3,072 + augmented 14,720 = 17,792 = scored by priors 17,792" in texts


def test_vflow_q_networks_beside_what_they_feed(drawn):
    r, texts = drawn["vflow6ch"]
    boxes = {b.kind: b for b in r.picture.boxes}
    assert [s.title for s in boxes["dequantizer"].sides] == ["q dequant  (dequantizer group)"]
    assert [s.title for s in boxes["augment"].sides] == ["q posterior  (q group)"]
    assert boxes["augment"].badge == "+3,072 dims" and "+3,072 dims" in texts
    assert all(s in texts for s in ("q dequant  (dequantizer group)", "q posterior  (q group)", "sample"))
    assert "17 steps \u00b7 4,491,872 params \u00b7 2.78 G MACs" in texts
    # the 37 stages: two runs of steps around the squeeze
    assert [b.title for b in r.picture.boxes if b.kind in ("flow", "reshape")] == [
        "stages 1\u201316", "stage 17: squeeze", "stages 18\u201337"]
    assert "4 \u00d7 step (actnorm \u00b7 conv1x1 \u00b7 mixture_coupling \u00b7 swap)" in texts
    assert "parameters 39,700,096 = flow 31,741,248 + q 4,491,872 + dequantizer 3,466,976" in texts
    assert "dims: data 3,072 + augmented 3,072 = 6,144 = scored by priors 6,144" in texts


def test_flowpp_totals(drawn):
    _, texts = drawn["flowpp"]
    assert "parameters 31,443,440 = flow 27,976,464 + q 0 + dequantizer 3,466,976" in texts
    assert "dims: data 3,072 + augmented 0 = 3,072 = scored by priors 3,072" in texts


@pytest.mark.parametrize("name", sorted(DOCS))
def test_readable_no_text_leaves_its_box_or_overlaps(drawn, name):
    r, _ = drawn[name]
    assert layout_problems(r.drawing) == []
    assert min(t.get_fontsize() for t, _ in r.drawing.texts) >= 7


@pytest.mark.parametrize("name", sorted(DOCS))
def test_docs_pictures_are_current(drawn, name):
    """docs/arch-*.svg say what a fresh drawing says (regenerate: augflow-dsl draw SPEC --out docs/...)."""
    def content(texts):  # the subtitle holds the spec's path as it was given
        return [s for s in texts if not s.endswith("augflow-dsl draw")]

    assert content(svg_texts(ROOT / DOCS[name])) == content(drawn[name][1])


def test_png_pdf_and_deterministic_svg(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    png, pdf, svg1, svg2 = (tmp_path / n for n in ("a.png", "a.pdf", "a.svg", "b.svg"))
    for out in (png, pdf, svg1, svg2):
        assert main(["draw", "specs/toy-vflow3-10d.flow", "--out", str(out)]) == 0
    assert f"wrote {svg2}" in capsys.readouterr().out
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(head[16:20], "big") > 1000  # width in pixels
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert svg1.read_bytes() == svg2.read_bytes()
    assert "10,348" in " ".join(svg_texts(svg1))


def test_bad_extension_and_missing_spec_refused(tmp_path):
    out = tmp_path / "arch.jpg"
    p = run_cli("draw", "specs/toy-glow3.flow", "--out", str(out))
    assert p.returncode == 2 and ".svg, .png, .pdf" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_invalid_spec_exits_1_without_picture(tmp_path, capsys):
    bad, out = tmp_path / "bad.flow", tmp_path / "bad.svg"
    bad.write_text((ROOT / "specs/toy-glow3.flow").read_text().replace("prior: normal", "prior: nosuch"))
    assert main(["draw", str(bad), "--out", str(out)]) == 1
    assert not out.exists() and "nosuch" in capsys.readouterr().err
    assert main(["draw", str(tmp_path / "missing.flow"), "--out", str(out)]) == 2
