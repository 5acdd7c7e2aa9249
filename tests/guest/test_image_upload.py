"""``novamig image upload``: real uploads through openstacksdk into the embedded cloud's Image API.

Most tests upload a small real qcow2 (``qemu-img create``) through the same `upload_image` the
command uses, so they take a second; one uploads the real Glance form of the full image through
the whole command when it is already in the image cache (it is skipped, saying so, rather than
spend minutes building it). The images each test uploads are deleted after it, so the session's
cloud keeps only its own images.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack import exceptions

from novamig.cli import main
from novamig.cloud.image_upload import (
    DIGEST_PROPERTY,
    TAG,
    UploadRefused,
    UploadSource,
    source_from_cloud_image,
    upload_image,
)
from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import TINY_IMAGE_ID, TINY_IMAGE_NAME
from novamig.embedded.service.image_api import ImageApi
from novamig.guest.full import find_cloud_image


@pytest.fixture
def image_names(embedded_conn: Any) -> Iterator[Callable[[], str]]:
    """Unique image names for one test; every image of those names is deleted afterwards."""
    names: list[str] = []

    def new() -> str:
        names.append(f"novamig-upload-test-{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield new
    for name in names:
        for image in embedded_conn.image.images(name=name):
            embedded_conn.image.delete_image(image.id, ignore_missing=True)


@pytest.fixture(scope="module")
def small_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True, timeout=60)
    return path


def _raw(conn: Any, image_id: str) -> dict[str, Any]:
    """The image as the Image API sends it (Glance v2: properties flattened), not as openstacksdk
    sorts it into attributes and ``properties``."""
    body: dict[str, Any] = conn.image.get(f"/images/{image_id}").json()
    return body


def _source(path: Path, digest: str) -> UploadSource:
    return UploadSource(
        path=path,
        digest=digest,
        properties={DIGEST_PROPERTY: digest, "novamig_version": "test", "hw_disk_bus": "virtio"},
    )


def test_upload_stores_the_bytes_and_says_what_it_is(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, small_qcow2: Path, image_names: Callable[[], str]
) -> None:
    name = image_names()
    seen: list[tuple[int, int]] = []
    result = upload_image(
        embedded_conn, _source(small_qcow2, "d1"), name=name, progress=lambda s, t: seen.append((s, t))
    )
    data = small_qcow2.read_bytes()
    assert result.action == "uploaded"
    assert result.size == len(data)
    assert seen and seen[-1] == (len(data), len(data))  # progress reached the total

    image = embedded_conn.image.get_image(result.image_id)
    assert (image.name, image.status, image.visibility) == (name, "active", "private")
    assert (image.disk_format, image.container_format) == ("qcow2", "bare")
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert image.hash_algo == "sha512"
    assert image.hash_value == hashlib.sha512(data).hexdigest()
    assert TAG in image.tags
    assert image.properties[DIGEST_PROPERTY] == "d1"
    raw = _raw(embedded_conn, result.image_id)
    assert (raw["hw_disk_bus"], raw["novamig_version"], raw[DIGEST_PROPERTY]) == ("virtio", "test", "d1")
    assert [i.id for i in embedded_conn.image.images(name=name)] == [result.image_id]
    # the bytes round trip, and Nova's own view of the store shows the image
    assert embedded_conn.image.download_image(image).content == data
    nova_view = embedded_conn.compute.get_image(result.image_id)
    assert (nova_view.name, nova_view.status) == (name, "ACTIVE")
    assert (embedded_cloud.workdir / "images" / result.image_id).stat().st_size == len(data)


def test_second_upload_of_the_same_build_is_left_alone(
    embedded_conn: Any, small_qcow2: Path, image_names: Callable[[], str]
) -> None:
    name = image_names()
    first = upload_image(embedded_conn, _source(small_qcow2, "d1"), name=name)
    second = upload_image(embedded_conn, _source(small_qcow2, "d1"), name=name)
    assert second.action == "already uploaded"
    assert second.image_id == first.image_id
    assert len(list(embedded_conn.image.images(name=name))) == 1


def test_another_build_replaces_only_with_replace_new_first_old_deleted(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, small_qcow2: Path, image_names: Callable[[], str]
) -> None:
    name = image_names()
    old = upload_image(embedded_conn, _source(small_qcow2, "d1"), name=name)
    with pytest.raises(UploadRefused) as refused:
        upload_image(embedded_conn, _source(small_qcow2, "d2"), name=name)
    assert refused.value.exit_code == 2
    assert old.image_id in str(refused.value) and "--replace" in str(refused.value)
    assert [i.id for i in embedded_conn.image.images(name=name)] == [old.image_id]  # nothing changed

    new = upload_image(embedded_conn, _source(small_qcow2, "d2"), name=name, replace=True)
    assert new.action == "replaced"
    assert new.replaced == (old.image_id,)
    assert [i.id for i in embedded_conn.image.images(name=name)] == [new.image_id]
    assert embedded_conn.image.get_image(new.image_id).properties[DIGEST_PROPERTY] == "d2"
    assert embedded_conn.image.find_image(old.image_id) is None
    assert not (embedded_cloud.workdir / "images" / old.image_id).exists()


def test_the_clouds_own_images_cannot_be_deleted_or_replaced(embedded_conn: Any, small_qcow2: Path) -> None:
    with pytest.raises(exceptions.ForbiddenException):
        embedded_conn.image.delete_image(TINY_IMAGE_ID)
    with pytest.raises(UploadRefused, match="protected"):
        upload_image(embedded_conn, _source(small_qcow2, "d1"), name=TINY_IMAGE_NAME, replace=True)
    assert [i.id for i in embedded_conn.image.images(name=TINY_IMAGE_NAME)] == [TINY_IMAGE_ID]


def test_real_full_cloud_image_through_the_command(
    embedded_cloud: EmbeddedCloud,
    embedded_conn: Any,
    image_names: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud_image = find_cloud_image()
    if cloud_image is None:
        pytest.skip(
            "the full image's Glance form is not in the image cache; building it takes minutes: "
            "run `novamig image build full --format qcow2` first"
        )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(embedded_cloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    name = image_names()
    argv = ["image", "upload", "full", "--cloud", embedded_cloud.cloud_name, "--name", name]

    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("uploaded: ")
    assert "MiB (100 %)" in err  # byte progress on stderr
    image_id = out.split()[1]
    raw = _raw(embedded_conn, image_id)
    assert (raw["status"], raw["size"]) == ("active", cloud_image.disk.stat().st_size)
    assert (raw["disk_format"], raw["container_format"], raw["visibility"]) == ("qcow2", "bare", "private")
    assert raw[DIGEST_PROPERTY] == cloud_image.digest
    expected = source_from_cloud_image(cloud_image).properties
    assert {key: raw.get(key) for key in expected} == expected
    assert expected["hw_disk_bus"] == "virtio" and expected["novamig_guest"] == "full"
    assert "hw_rng_model" not in raw  # the guest has no virtio-rng driver
    assert "hw_qemu_guest_agent" not in raw  # nor a QEMU guest agent

    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"already uploaded: {image_id}")


def test_command_refuses_a_foreign_image_of_that_name_before_building(
    embedded_cloud: EmbeddedCloud, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """novamig-tiny carries no novamig digest (no build could match it) and is protected."""
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(embedded_cloud.clouds_yaml))
    argv = ["image", "upload", "full", "--cloud", embedded_cloud.cloud_name, "--name", TINY_IMAGE_NAME]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert TINY_IMAGE_ID in err and "--replace" in err and "build:" not in err
    assert main([*argv, "--replace"]) == 2
    err = capsys.readouterr().err
    assert "protected" in err and "build:" not in err


def test_unknown_cloud_exits_2_naming_the_known_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  alpha: {auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: p}}\n"
        "  beta: {auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: p}}\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    assert main(["image", "upload", "full", "--cloud", "gamma"]) == 2
    err = capsys.readouterr().err
    assert "'gamma'" in err and "alpha, beta" in err


def test_unreachable_cloud_exits_3_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  down:\n"
        "    auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: secret-pw,\n"
        "           project_name: p, user_domain_name: Default, project_domain_name: Default}\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    assert main(["image", "upload", "full", "--cloud", "down"]) == 3
    captured = capsys.readouterr()
    assert "cannot authenticate" in captured.err
    assert "build:" not in captured.err
    assert "secret-pw" not in captured.err + captured.out


def test_tiny_has_no_glance_form_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "upload", "tiny", "--cloud", "anything"]) == 2
    assert "no Glance form" in capsys.readouterr().err


def test_image_api_refuses_what_glance_refuses(tmp_path: Path) -> None:
    """Without a cloud: read-only attributes, a second upload, formats and a read-only store."""

    class Store:
        def __init__(self) -> None:
            self.images: dict[str, Any] = {}

    def call(app: ImageApi, method: str, path: str, body: bytes = b"") -> str:
        import io

        seen: dict[str, str] = {}
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        b"".join(app(environ, lambda status, headers: seen.update(status=status)))
        return seen["status"].split()[0]

    store = Store()
    app = ImageApi(store, "http://127.0.0.1:1", tmp_path)
    assert call(app, "POST", "/v2/images", b'{"name": "x", "status": "active"}') == "403"
    assert call(app, "POST", "/v2/images", b'{"name": "x", "disk_format": "exe"}') == "400"
    assert call(app, "POST", "/v2/images", b'{"name": "x", "min_ram": "lots"}') == "400"
    body = b'{"id": "11111111-2222-3333-4444-555555555555", "name": "x", "disk_format": "raw",'
    body += b' "container_format": "bare"}'
    assert call(app, "POST", "/v2/images", body) == "201"
    image = "/v2/images/11111111-2222-3333-4444-555555555555"
    assert call(app, "PUT", f"{image}/file", b"abc") == "204"
    assert call(app, "PUT", f"{image}/file", b"abc") == "409"
    assert store.images["11111111-2222-3333-4444-555555555555"]["size"] == 3
    assert call(app, "DELETE", image) == "204"
    assert not (tmp_path / "11111111-2222-3333-4444-555555555555").exists()
    assert call(ImageApi(Store(), "http://127.0.0.1:1"), "POST", "/v2/images", b"{}") == "405"
