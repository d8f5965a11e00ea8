"""The objects: CT Image IOD validity (dciodvfy), anatomy in HU, determinism, streaming."""

from __future__ import annotations

import subprocess
import tracemalloc

import numpy as np
import pydicom
import pytest

from ct_simulator.cli import main
from ct_simulator.iod import StudyPlan, iter_instances
from ct_simulator.phantom import Phantom
from lab import need_tool


def dciodvfy_errors(path) -> list[str]:
    exe = need_tool("dciodvfy", "dicom3tools")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("syntax", ["explicit", "implicit", "rle", "j2k"])
def test_generated_files_pass_dciodvfy(tmp_path, syntax):
    rc = main(["generate", "--out", str(tmp_path), "--series", "2", "--slices", "3", "--rows", "128",
               "--cols", "128", "--seed", "7", "--transfer-syntax", syntax, "--progress", "never"])
    assert rc == 0
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == 6
    for f in files:
        assert dciodvfy_errors(f) == [], f
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.Modality == "CT" and ds.RescaleType == "HU" and ds.ConvolutionKernel


def test_default_matrix_is_512_and_passes_dciodvfy(tmp_path):
    assert main(["generate", "--out", str(tmp_path), "--slices", "1", "--seed", "1", "--progress", "never"]) == 0
    (f,) = tmp_path.rglob("*.dcm")
    ds = pydicom.dcmread(f)
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16)
    assert dciodvfy_errors(f) == []


def test_same_seed_same_bytes_other_seed_other_patient(tmp_path):
    for name, seed in (("a", "42"), ("b", "42"), ("c", "43")):
        assert main(["generate", "--out", str(tmp_path / name), "--slices", "4", "--rows", "64", "--cols", "64",
                     "--seed", seed, "--progress", "never"]) == 0
    a, b, c = (sorted((tmp_path / n).rglob("*.dcm")) for n in "abc")
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]
    da, dc = pydicom.dcmread(a[0]), pydicom.dcmread(c[0])
    assert da.PixelData != dc.PixelData
    assert da.StudyInstanceUID != dc.StudyInstanceUID


def test_series_geometry_and_uids():
    plan = StudyPlan(studies=2, series=2, slices=5, rows=32, cols=32, seed=3)
    insts = [(i.study, i.series, i.dataset) for i in iter_instances(plan)]
    assert len(insts) == plan.total == 20
    uids = [ds.SOPInstanceUID for _, _, ds in insts]
    assert len(set(uids)) == 20
    assert len({ds.StudyInstanceUID for _, _, ds in insts}) == 2
    assert len({ds.SeriesInstanceUID for _, _, ds in insts}) == 4
    first_series = [ds for st, se, ds in insts if (st, se) == (1, 1)]
    z = [float(ds.ImagePositionPatient[2]) for ds in first_series]
    assert z == sorted(z, reverse=True) and len(set(z)) == 5  # advancing feet-ward
    assert [int(ds.InstanceNumber) for ds in first_series] == [1, 2, 3, 4, 5]
    step = abs(z[1] - z[0])
    assert step == pytest.approx(float(first_series[0].SliceThickness))


def test_duplicate_uids_on_demand():
    plan = StudyPlan(series=2, slices=3, rows=16, cols=16, seed=1, duplicate_uids=True)
    by_series: dict[str, set[str]] = {}
    for inst in iter_instances(plan):
        by_series.setdefault(inst.dataset.SeriesInstanceUID, set()).add(inst.sop_instance_uid)
    assert [len(v) for v in by_series.values()] == [1, 1]


def test_phantom_has_thorax_and_abdomen_in_hounsfield_units():
    p = Phantom(256, 256, seed=5)
    chest, belly = p.hu(150), p.hu(330)
    assert chest.dtype == np.int16
    assert chest.min() >= -1100 and chest.max() < 2000
    air = (chest < -950).mean()
    lung = ((chest > -900) & (chest < -750)).mean()
    soft = ((chest > 0) & (chest < 100)).mean()
    bone = (chest > 300).mean()
    fat = ((chest > -150) & (chest < -50)).mean()
    assert air > 0.2 and lung > 0.05 and soft > 0.05 and bone > 0.002 and fat > 0.02
    assert ((belly > -900) & (belly < -750)).mean() < 0.01  # no lung in the abdomen
    assert ((belly > 40) & (belly < 80)).mean() > 0.05  # liver, spleen, muscle
    # deterministic and varying along z
    assert np.array_equal(Phantom(256, 256, seed=5).hu(150), chest)
    assert not np.array_equal(Phantom(256, 256, seed=6).hu(150), chest)
    changed = np.abs(p.hu(150).astype(int) - p.hu(200).astype(int)) > 100  # ribs, heart, lungs move
    assert changed.mean() > 0.01


def test_generation_streams_one_slice_at_a_time():
    plan = StudyPlan(slices=400, rows=256, cols=256, seed=2)  # 52 MB of pixel data in all
    tracemalloc.start()
    try:
        n = 0
        for inst in iter_instances(plan):
            n += len(inst.dataset.PixelData)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 400 * 256 * 256 * 2
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB: the series is being held in memory"


@pytest.mark.parametrize("syntax", ["rle", "j2k"])
def test_compressed_syntaxes_are_lossless(syntax):
    from ct_simulator.syntaxes import encode_for, resolve

    inst = next(iter_instances(StudyPlan(slices=1, rows=64, cols=64, seed=9)))
    original = inst.dataset.pixel_array.copy()
    ds = encode_for(inst.dataset, resolve(syntax))
    assert ds.file_meta.TransferSyntaxUID == resolve(syntax)
    assert np.array_equal(ds.pixel_array, original)
