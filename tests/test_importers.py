from pathlib import Path

import pytest

from faceage.data.importers import IMPORTERS, import_dataset
from faceage.errors import ManifestError


def touch(root: Path, rel: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"img")
    return p


def by_name(m):
    return {Path(s.path).name: s for s in m.samples}


def test_registry():
    assert set(IMPORTERS) == {"utkface", "fgnet", "morph2", "afad", "csv", "folder"}
    with pytest.raises(ManifestError, match="unknown"):
        import_dataset("nope", ".")


def test_utkface(tmp_path):
    touch(tmp_path, "23_1_2_20170116174525125.jpg.chip.jpg")
    touch(tmp_path, "39_1_20170116174525125.jpg.chip.jpg")  # race field missing: still parses
    touch(tmp_path, "part2/100_0_0_20170112213500903.jpg.chip.jpg")
    touch(tmp_path, "garbage.jpg")
    touch(tmp_path, "x_1_2_3.jpg.chip.jpg")
    m = import_dataset("utkface", tmp_path)
    s = by_name(m)
    assert s["23_1_2_20170116174525125.jpg.chip.jpg"].age == 23
    assert s["39_1_20170116174525125.jpg.chip.jpg"].age == 39
    assert s["100_0_0_20170112213500903.jpg.chip.jpg"].age == 100
    assert all(x.subject is None and x.source == str(x.path) for x in m.samples)
    assert len(m.problems) == 2 and any("garbage.jpg" in p for p in m.problems)


def test_fgnet(tmp_path):
    for name in ("001A02.JPG", "001a43a.jpg", "001A43b.JPG", "082A18.JPG", "readme.JPG"):
        touch(tmp_path, f"images/{name}")
    m = import_dataset("fgnet", tmp_path)
    s = by_name(m)
    assert (s["001A02.JPG"].age, s["001A02.JPG"].subject) == (2, "001")
    assert (s["001a43a.jpg"].age, s["001A43b.JPG"].age) == (43, 43)
    assert s["082A18.JPG"].subject == "082"
    assert len(m.problems) == 1


def test_morph2_academic_csv(tmp_path):
    touch(tmp_path, "Album2/003094_1M58.JPG")
    touch(tmp_path, "Album2/003094_2M60.JPG")
    touch(tmp_path, "Album2/120100_00F21.JPG")
    (tmp_path / "morph_2008_nonCommercial.csv").write_text(
        "id_num,picture_num,dob,doa,race,gender,facial_hair,age,age_diff,glasses,photo\n"
        "3094,1,1/1/1940,1/1/1998,B,M,1,58,0,0,Album2/003094_1M58.JPG\n"
        "3094,2,1/1/1940,1/1/2000,B,M,1,60,2,0,Album2/003094_2M60.JPG\n"
        "120100,0,1/1/1980,1/1/2001,W,F,0,21,0,0,Album2/120100_00F21.JPG\n"
        "5,0,1/1/1980,1/1/2001,W,F,0,21,0,0,Album2/missing.JPG\n"
        "6,0,1/1/1980,1/1/2001,W,F,0,abc,0,0,Album2/whatever.JPG\n"
    )
    for src in (tmp_path, tmp_path / "morph_2008_nonCommercial.csv"):
        m = import_dataset("morph2", src)
        s = by_name(m)
        assert (s["003094_1M58.JPG"].age, s["003094_1M58.JPG"].subject) == (58, "3094")
        assert s["003094_2M60.JPG"].subject == "3094"
        assert s["120100_00F21.JPG"].age == 21
        assert len(m.samples) == 3 and len(m.problems) == 2


def test_afad(tmp_path):
    touch(tmp_path, "AFAD-Full/15/111/a.jpg")
    touch(tmp_path, "AFAD-Full/72/112/b.jpg")
    touch(tmp_path, "AFAD-Full/x/112/c.jpg")
    m = import_dataset("afad", tmp_path / "AFAD-Full")
    s = by_name(m)
    assert (s["a.jpg"].age, s["b.jpg"].age) == (15, 72)
    assert len(m.problems) == 1


def test_csv(tmp_path):
    touch(tmp_path, "imgs/a.jpg")
    touch(tmp_path, "imgs/b.png")
    (tmp_path / "labels.csv").write_text("path,age,subject\nimgs/a.jpg,31,p1\nimgs/b.png,5\nimgs/c.jpg,7\nimgs/a.jpg,old\n")
    m = import_dataset("csv", tmp_path / "labels.csv")
    assert [(Path(s.path).name, s.age, s.subject) for s in m.samples] == [("a.jpg", 31, "p1"), ("b.png", 5, None)]
    assert len(m.problems) == 2
    (tmp_path / "nohdr.csv").write_text("imgs/a.jpg,40\n")
    assert import_dataset("csv", tmp_path / "nohdr.csv").samples[0].age == 40


def test_folder(tmp_path):
    touch(tmp_path, "7/a.jpg")
    touch(tmp_path, "45/sub/b.png")
    touch(tmp_path, "old/c.jpg")
    touch(tmp_path, "loose.jpg")
    m = import_dataset("folder", tmp_path)
    assert sorted((Path(s.path).name, s.age) for s in m.samples) == [("a.jpg", 7), ("b.png", 45)]
    assert len(m.problems) == 2


def test_empty_source_is_an_error(tmp_path):
    with pytest.raises(ManifestError, match="no labelled images"):
        import_dataset("utkface", tmp_path)
    with pytest.raises(ManifestError, match="not a folder"):
        import_dataset("fgnet", tmp_path / "missing")
