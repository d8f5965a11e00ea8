"""The DICOMweb subset (/api/dicomweb), driven by the real ``dicomweb-client`` library
against the admin API under gunicorn, over instances that the CT simulator and DCMTK's
storescu stored into a real PACS (dicomweb_lab.py). Rendered slices are compared with
DCMTK's own rendering (dcmj2pnm) of the same file and window."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import requests
from admin_helpers import AUTH, TOKEN
from dicomweb_lab import EXPLICIT, IMPLICIT, J2K_LOSSLESS, JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS, RLE, start

from lab import need_tool

dicomweb_api = pytest.importorskip("dicomweb_client.api", reason="pip install dicomweb-client (requirements-test.txt)")


@pytest.fixture(scope="module")
def lab(redis_server, tmp_path_factory):
    from dicomlab.registry import Registry, connect

    c = redis_server.client()
    c.flushall()
    c.close()
    lab = start(redis_server.url, Registry(connect(redis_server.url)), tmp_path_factory.mktemp("dicomweb"))
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def client(lab):
    return dicomweb_api.DICOMwebClient(url=lab.api.url + "/api/dicomweb", headers=AUTH)


def val(item: dict, tag: str):
    values = item.get(tag, {}).get("Value") or [None]
    v = values[0]
    return v["Alphabetic"] if isinstance(v, dict) else v


def series_of(client, study: str) -> tuple[str, list[str]]:
    series = client.search_for_series(study)
    assert len(series) == 1
    se = val(series[0], "0020000E")
    return se, [val(i, "00080018") for i in client.search_for_instances(study, se)]


def stored_file(lab, study: str, series: str, sop: str):
    from pydicom import dcmread

    return dcmread(lab.storage / study / series / f"{sop}.dcm")


# -- QIDO-RS --------------------------------------------------------------------------
def test_qido_studies_with_the_common_query_parameters(lab, client):
    studies = client.search_for_studies()
    by_patient = {val(s, "00100020"): s for s in studies}
    assert set(by_patient) == set(lab.studies)
    for pid, uid in lab.studies.items():
        assert val(by_patient[pid], "0020000D") == uid
        assert val(by_patient[pid], "00080061") == "CT"  # ModalitiesInStudy
        assert val(by_patient[pid], "00081190").endswith(f"/api/dicomweb/studies/{uid}")
    assert val(by_patient["DW-EXPLICIT"], "00201208") == 6  # NumberOfStudyRelatedInstances
    assert val(by_patient["DW-EXPLICIT"], "00201206") == 1  # NumberOfStudyRelatedSeries
    assert val(by_patient["LAB0001"], "00100010") == "LAB^TEST"

    assert [val(s, "0020000D") for s in client.search_for_studies(search_filters={"PatientID": "DW-RLE"})] \
        == [lab.studies["DW-RLE"]]
    assert len(client.search_for_studies(search_filters={"PatientID": "DW-*"})) == 3
    assert len(client.search_for_studies(search_filters={"PatientName": "lab^test"})) == 1  # PN: any case
    two = f"{lab.studies['DW-RLE']},{lab.studies['DW-J2K']}"
    assert {val(s, "00100020") for s in client.search_for_studies(search_filters={"StudyInstanceUID": two})} \
        == {"DW-RLE", "DW-J2K"}
    assert len(client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})) == 4
    assert client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"}) == []

    # Dates: exact, ranges and open ranges select exactly the studies whose date is inside.
    dates = {val(s, "00100020"): val(s, "00080020") for s in studies}
    assert dates["LAB0001"] == "20261127"
    for rng, lo, hi in (("20261127", "20261127", "20261127"), ("20261101-20261130", "20261101", "20261130"),
                        ("20261128-", "20261128", "99999999"), ("-20261127", "00000000", "20261127")):
        got = {val(s, "00100020") for s in client.search_for_studies(search_filters={"StudyDate": rng})}
        assert got == {p for p, d in dates.items() if lo <= d <= hi}, rng
    assert "LAB0001" in {val(s, "00100020") for s in
                         client.search_for_studies(search_filters={"StudyDate": "20261101-20261130"})}

    # limit / offset page through the same order; includefield adds attributes from the files.
    ordered = [val(s, "0020000D") for s in studies]
    assert [val(s, "0020000D") for s in client.search_for_studies(limit=2, offset=1)] == ordered[1:3]
    with_time = client.search_for_studies(search_filters={"PatientID": "LAB0001"}, fields=["StudyTime", "00080090"])
    assert val(with_time[0], "00080030") == "101500"
    assert "00080090" in with_time[0]
    everything = client.search_for_studies(search_filters={"PatientID": "DW-EXPLICIT"}, fields=["all"])
    assert val(everything[0], "00080030") and val(everything[0], "00100040") in ("F", "M", "O")  # StudyTime, PatientSex


def test_qido_series_and_instances(lab, client):
    study = lab.studies["DW-EXPLICIT"]
    series = client.search_for_series(study)
    assert len(series) == 1
    assert val(series[0], "00080060") == "CT"
    assert val(series[0], "00201209") == 6  # NumberOfSeriesRelatedInstances
    se = val(series[0], "0020000E")
    assert client.search_for_series(study, search_filters={"Modality": "MR"}) == []
    assert len(client.search_for_series(search_filters={"ModalitiesInStudy": "CT", "PatientID": "DW-*"})) == 3
    everywhere = client.search_for_series(search_filters={"Modality": "CT"})
    assert len(everywhere) == 4 and se in {val(s, "0020000E") for s in everywhere}

    instances = client.search_for_instances(study, se, fields=["ImagePositionPatient", "RescaleIntercept"])
    assert [val(i, "00200013") for i in instances] == [1, 2, 3, 4, 5, 6]  # Instance Number order
    assert all(val(i, "00080016") == "1.2.840.10008.5.1.4.1.1.2" for i in instances)
    assert all("00200032" in i and "00281052" in i and val(i, "00280010") == 128 for i in instances)
    one = client.search_for_instances(study, se, search_filters={"InstanceNumber": "3"})
    assert [val(i, "00200013") for i in one] == [3]
    assert len(client.search_for_instances(study)) == 6  # /studies/{study}/instances


# -- WADO-RS ----------------------------------------------------------------------------
@pytest.mark.parametrize("pid, syntax", [("DW-EXPLICIT", EXPLICIT), ("DW-RLE", RLE), ("DW-J2K", J2K_LOSSLESS),
                                         ("LAB0001", None)])
def test_wado_retrieve_as_stored_and_as_explicit_vr_little_endian(lab, client, pid, syntax):
    study = lab.studies[pid]
    se, sops = series_of(client, study)
    for sop in sops:
        disk = stored_file(lab, study, se, sop)
        as_stored = client.retrieve_instance(study, se, sop, media_types=(("application/dicom", "*"),))
        assert as_stored.file_meta.TransferSyntaxUID == disk.file_meta.TransferSyntaxUID
        assert as_stored.PixelData == disk.PixelData  # the file, byte for byte
        if syntax:
            assert disk.file_meta.TransferSyntaxUID == syntax
        plain = client.retrieve_instance(study, se, sop, media_types=(("application/dicom", EXPLICIT),))
        assert plain.file_meta.TransferSyntaxUID == EXPLICIT
        assert np.array_equal(plain.pixel_array, disk.pixel_array)
    syntaxes = {str(stored_file(lab, study, se, s).file_meta.TransferSyntaxUID) for s in sops}
    if pid == "LAB0001":
        assert syntaxes == {JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS, IMPLICIT}
    assert len(client.retrieve_series(study, se, media_types=(("application/dicom", "*"),))) == len(sops)
    assert len(client.retrieve_study(study)) == len(sops)


def test_wado_metadata_leaves_out_the_pixel_data(lab, client):
    study = lab.studies["DW-EXPLICIT"]
    se, sops = series_of(client, study)
    meta = client.retrieve_instance_metadata(study, se, sops[0])
    assert val(meta, "00100020") == "DW-EXPLICIT"
    assert val(meta, "00280030") is not None  # Pixel Spacing
    assert "7FE00010" not in meta
    series_meta = client.retrieve_series_metadata(study, se)
    assert [val(m, "00080018") for m in series_meta] == sops
    assert len(client.retrieve_study_metadata(study)) == 6


def test_wado_frames_are_the_decoded_stored_values(lab, client):
    for pid in ("DW-EXPLICIT", "DW-J2K", "LAB0001"):
        study = lab.studies[pid]
        se, sops = series_of(client, study)
        for sop in sops:
            disk = stored_file(lab, study, se, sop)
            (frame,) = client.retrieve_instance_frames(study, se, sop, frame_numbers=[1])
            assert frame == disk.pixel_array.astype("<u2").tobytes()


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode == "L"
    return np.asarray(img).astype(int)


def _dcmtk_render(path, center: float, width: float, out) -> np.ndarray:
    """DCMTK's rendering of a file in a VOI window (dcmj2pnm: JPEG, JPEG-LS via dcml2pnm, RLE)."""
    tool = "dcml2pnm" if "jpls" in str(path) else "dcmj2pnm"
    exe = need_tool(tool, "dcmtk")
    subprocess.run([exe, "+Ww", str(center), str(width), "+on", str(path), str(out)], check=True,
                   capture_output=True, timeout=60)
    from PIL import Image

    return np.asarray(Image.open(out).convert("L")).astype(int)


@pytest.mark.parametrize("center, width", [(-600, 1500), (40, 400), (500, 2000)])
def test_rendered_png_matches_dcmtk_in_each_window(lab, client, tmp_path, center, width):
    """Lung, soft tissue, bone: the server's slice equals DCMTK's, within one grey level."""
    study = lab.studies["DW-EXPLICIT"]
    se, sops = series_of(client, study)
    data = client.retrieve_instance_rendered(study, se, sops[3], media_types=("image/png",),
                                             params={"window": f"{center},{width}"})
    ours = _png(data)
    theirs = _dcmtk_render(lab.storage / study / se / f"{sops[3]}.dcm", center, width, tmp_path / "d.png")
    assert ours.shape == theirs.shape == (128, 128)
    assert np.abs(ours - theirs).max() <= 1
    assert len(np.unique(ours)) > 8  # a slice, not a blank


def test_rendered_compressed_syntaxes_equal_their_uncompressed_rendering(lab, client, tmp_path):
    """JPEG Lossless and JPEG-LS (pylibjpeg-libjpeg) and Implicit VR rendered like DCMTK renders the
    uncompressed originals; RLE like DCMTK renders the stored file; JPEG 2000 like the transcoded instance."""
    study = lab.studies["LAB0001"]
    se, sops = series_of(client, study)
    originals = sorted(lab.originals.glob("*.dcm"))
    for sop, original in zip(sops, originals, strict=True):
        data = client.retrieve_instance_rendered(study, se, sop, media_types=("image/png",),
                                                 params={"window": "1000,3000"})
        assert np.abs(_png(data) - _dcmtk_render(original, 1000, 3000, tmp_path / "o.png")).max() <= 1
    study = lab.studies["DW-RLE"]
    se, sops = series_of(client, study)
    data = client.retrieve_instance_rendered(study, se, sops[0], media_types=("image/png",),
                                             params={"window": "40,400"})
    assert np.abs(_png(data) - _dcmtk_render(lab.storage / study / se / f"{sops[0]}.dcm", 40, 400,
                                             tmp_path / "r.png")).max() <= 1
    study = lab.studies["DW-J2K"]
    se, sops = series_of(client, study)
    explicit = client.retrieve_instance(study, se, sops[0], media_types=(("application/dicom", EXPLICIT),))
    explicit.save_as(tmp_path / "j2k-as-explicit.dcm", enforce_file_format=True)
    data = client.retrieve_instance_rendered(study, se, sops[0], media_types=("image/png",),
                                             params={"window": "-600,1500"})
    assert np.abs(_png(data) - _dcmtk_render(tmp_path / "j2k-as-explicit.dcm", -600, 1500,
                                             tmp_path / "j.png")).max() <= 1


def test_rendered_jpeg_and_the_default_window(lab, client):
    from PIL import Image

    study = lab.studies["DW-EXPLICIT"]
    se, sops = series_of(client, study)
    jpeg = client.retrieve_instance_rendered(study, se, sops[0], params={"window": "40,400", "quality": "95"})
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"  # the default media type
    png = _png(client.retrieve_instance_rendered(study, se, sops[0], media_types=("image/png",),
                                                 params={"window": "40,400"}))
    assert np.abs(np.asarray(Image.open(io.BytesIO(jpeg))).astype(int) - png).mean() < 3
    # No window: the file's first Window Center / Width.
    disk = stored_file(lab, study, se, sops[0])
    c, w = float(disk.WindowCenter[0]), float(disk.WindowWidth[0])
    default = _png(client.retrieve_instance_rendered(study, se, sops[0], media_types=("image/png",)))
    given = _png(client.retrieve_instance_rendered(study, se, sops[0], media_types=("image/png",),
                                                   params={"window": f"{c:g},{w:g}"}))
    assert np.array_equal(default, given)
    small = client.retrieve_instance_rendered(study, se, sops[0], media_types=("image/png",),
                                              params={"viewport": "64,64"})
    assert Image.open(io.BytesIO(small)).size == (64, 64)


def test_rendered_is_revalidated_and_changes_with_the_file(lab, client):
    """ETag + no-cache: 304 while the file and the parameters are the same, a new ETag once the
    instance was replaced (the same SOP Instance UID sent again). The last test to use LAB0001,
    whose third instance it replaces."""

    study = lab.studies["LAB0001"]
    se, sops = series_of(client, study)
    url = f"{lab.api.url}/api/dicomweb/studies/{study}/series/{se}/instances/{sops[2]}/rendered"
    first = requests.get(url, headers={**AUTH, "Accept": "image/png"}, params={"window": "40,400"}, timeout=30)
    assert first.status_code == 200 and first.headers["Cache-Control"] == "private, no-cache"
    etag = first.headers["ETag"]
    same = requests.get(url, headers={**AUTH, "Accept": "image/png", "If-None-Match": etag},
                        params={"window": "40,400"}, timeout=30)
    assert same.status_code == 304 and not same.content
    other = requests.get(url, headers={**AUTH, "Accept": "image/png", "If-None-Match": etag},
                         params={"window": "-600,1500"}, timeout=30)
    assert other.status_code == 200 and other.headers["ETag"] != etag
    # The modality sends the instance again with other pixels: the PACS replaces the file.
    from pydicom import dcmread

    path = lab.storage / study / se / f"{sops[2]}.dcm"
    ds = dcmread(path)
    ds.PixelData = bytes(len(ds.PixelData))
    resent = lab.storage.parent / "resent.dcm"
    ds.save_as(resent, enforce_file_format=True)
    sent = subprocess.run([need_tool("storescu", "dcmtk"), "-xi", "-aet", "CT01", "-aec", "PACS", "127.0.0.1",
                           str(lab.pacs.port), str(resent)], capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    after = requests.get(url, headers={**AUTH, "Accept": "image/png", "If-None-Match": etag},
                         params={"window": "40,400"}, timeout=30)
    assert after.status_code == 200 and after.headers["ETag"] != etag
    assert set(np.unique(_png(after.content))) == {0}  # stored 0 = -1024 HU: black in soft tissue


# -- the token, the paths, the errors ---------------------------------------------------------
def test_the_token_applies_to_every_dicomweb_route(lab):
    base = lab.api.url + "/api/dicomweb"
    study = lab.studies["DW-EXPLICIT"]
    for path in ("/studies", f"/studies/{study}/series", f"/studies/{study}/metadata", f"/studies/{study}"):
        r = requests.get(base + path, timeout=30)
        assert r.status_code == 401, path
        assert "ADMIN_TOKEN" in r.json()["error"]
        assert requests.get(base + path, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    wrong = dicomweb_api.DICOMwebClient(url=base, headers={"Authorization": "Bearer not-" + TOKEN})
    with pytest.raises(requests.HTTPError) as err:
        wrong.search_for_studies()
    assert err.value.response.status_code == 401


def test_paths_come_from_the_index_never_from_the_request(lab, client):
    base = lab.api.url + "/api/dicomweb"
    study = lab.studies["DW-EXPLICIT"]
    se, sops = series_of(client, study)
    # A file in the storage folder that the index does not list is not served.
    stray = "1.2.3.999"
    shutil.copy(lab.storage / study / se / f"{sops[0]}.dcm", lab.storage / study / se / f"{stray}.dcm")
    try:
        for tail in ("", "/metadata", "/rendered"):
            r = requests.get(f"{base}/studies/{study}/series/{se}/instances/{stray}{tail}", headers=AUTH, timeout=30)
            assert r.status_code == 404 and "No instance" in r.json()["error"], tail
    finally:
        (lab.storage / study / se / f"{stray}.dcm").unlink()
    for bad in ("..%2F..%2Fetc", "..", "1.2.3%0A", "1.2.3%2F..", "%2E%2E", "1." + "2" * 70):
        r = requests.get(f"{base}/studies/{bad}/series/{se}/instances/{sops[0]}/rendered", headers=AUTH, timeout=30)
        assert r.status_code == 404, bad
        r = requests.get(f"{base}/studies/{study}/series/{se}/instances/{bad}", headers=AUTH, timeout=30)
        assert r.status_code == 404, bad


def test_bad_requests_are_told_in_words(lab, client):
    base = lab.api.url + "/api/dicomweb"
    study = lab.studies["DW-EXPLICIT"]
    se, sops = series_of(client, study)
    rendered = f"{base}/studies/{study}/series/{se}/instances/{sops[0]}/rendered"
    r = requests.get(rendered, headers={**AUTH, "Accept": "text/html"}, timeout=30)
    assert r.status_code == 406 and "image/jpeg or image/png" in r.json()["error"]
    for params, words in (({"window": "abc"}, "window"), ({"window": "40,0"}, "width"),
                          ({"quality": "0"}, "quality"), ({"quality": "x"}, "quality"),
                          ({"viewport": "0,10"}, "viewport"), ({"viewport": "64"}, "viewport")):
        r = requests.get(rendered, headers=AUTH, params=params, timeout=30)
        assert r.status_code == 400 and words in r.json()["error"], params
    r = requests.get(f"{base}/studies", headers=AUTH, params={"NotAnAttribute": "1"}, timeout=30)
    assert r.status_code == 400 and "NotAnAttribute" in r.json()["error"]
    r = requests.get(f"{base}/studies", headers=AUTH, params={"StudyDate": "2026"}, timeout=30)
    assert r.status_code == 400 and "YYYYMMDD" in r.json()["error"]
    r = requests.get(f"{base}/studies", headers=AUTH, params={"Manufacturer": "X"}, timeout=30)
    assert r.status_code == 200 and len(r.json()) == 4
    assert r.headers["Content-Type"] == "application/dicom+json"
    assert r.headers["Warning"].startswith("299 ") and "Manufacturer" in r.headers["Warning"]
    r = requests.get(f"{base}/studies/{study}/series/{se}/instances/{sops[0]}", timeout=30,
                     headers={**AUTH, "Accept": 'multipart/related; type="application/dicom"; '
                                                "transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert r.status_code == 406 and "not offered" in r.json()["error"]
    # No transfer-syntax parameter: Explicit VR Little Endian (PS3.18), here decompressed from RLE.
    study = lab.studies["DW-RLE"]
    se, sops = series_of(client, study)
    r = requests.get(f"{base}/studies/{study}/series/{se}/instances/{sops[0]}", timeout=30,
                     headers={**AUTH, "Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert f"Content-Type: application/dicom; transfer-syntax={EXPLICIT}\r\n".encode() in r.content


def test_rendered_slices_are_cached_within_bounds(lab, client):
    """In one process: a repeated request comes from the caches, which never hold more than their budget;
    a replaced file is decoded again."""
    import os

    from admin_api import create_app
    from admin_api.dicomweb import parts

    app = create_app({"TESTING": True, "ADMIN_TOKEN": TOKEN, "REDIS_URL": lab.pacs.redis_url,
                      "STORAGE_DIR": str(lab.storage), "RENDER_CACHE_MB": 0.1, "RENDERED_CACHE_MB": 0.05})
    http = app.test_client()
    study = lab.studies["DW-EXPLICIT"]
    se, sops = series_of(client, study)
    url = f"/api/dicomweb/studies/{study}/series/{se}/instances/{{}}/rendered?window=-600,1500&accept=image/png"
    first = http.get(url.format(sops[0]), headers=AUTH)
    assert first.status_code == 200 and first.mimetype == "image/png"
    with app.app_context():
        _, renderer = parts()
    hits = renderer.images.hits
    again = http.get(url.format(sops[0]), headers=AUTH)
    assert again.data == first.data and renderer.images.hits == hits + 1
    for sop in sops:  # six 32 KiB frames through a 100 KiB budget
        for window in ("-600,1500", "40,400", "500,2000"):
            assert http.get(url.format(sop).replace("-600,1500", window), headers=AUTH).status_code == 200
            assert renderer.frames.used <= renderer.frames.budget
            assert renderer.images.used <= renderer.images.budget
    assert 0 < len(renderer.frames) <= 3
    # Another version of the file (same size, new modification time) is a new key: decoded again.
    path = lab.storage / study / se / f"{sops[-1]}.dcm"
    misses = renderer.frames.misses
    http.get(url.format(sops[-1]), headers=AUTH)
    assert renderer.frames.misses == misses  # still cached
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert http.get(url.format(sops[-1]), headers=AUTH).status_code == 200
    assert renderer.frames.misses == misses + 1
